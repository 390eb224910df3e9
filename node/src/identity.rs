//! The node's keys: ed25519 (the iroh endpoint key) and BLS12-381 (blst, min_sig: signatures in
//! G1, public keys in G2) with a proof of possession. Stored in one keystore file, encrypted at
//! rest with a passphrase (Argon2id -> XChaCha20-Poly1305) or, only when asked, in plaintext.

use std::io::Write;
use std::path::Path;

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Domain-separation tag for BLS proofs of possession (the IETF BLS "POP" ciphersuite, G1 sigs).
pub const BLS_POP_DST: &[u8] = b"BLS_POP_BLS12381G1_XMD:SHA-256_SSWU_RO_POP_";

/// Domain-separation tag for BLS signatures by keys that have a proof of possession.
pub const BLS_SIG_DST: &[u8] = b"BLS_SIG_BLS12381G1_XMD:SHA-256_SSWU_RO_POP_";

const KEYSTORE_VERSION: u32 = 1;
const ENCRYPTION_SCHEME: &str = "argon2id-xchacha20poly1305";
/// Argon2id cost (OWASP's recommended minimum: 19 MiB, 2 passes, 1 lane).
const KDF_MEMORY_KIB: u32 = 19 * 1024;
const KDF_PASSES: u32 = 2;
const KDF_LANES: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("an identity already exists at {0}; refusing to overwrite it")]
    AlreadyExists(String),
    #[error("no identity at {0}; run `onvm init --data-dir <dir>` first")]
    Missing(String),
    #[error("wrong passphrase for the identity at {0} (or the file was tampered with)")]
    WrongPassphrase(String),
    #[error(
        "the identity at {0} is encrypted: set ONVM_IDENTITY_PASSPHRASE or enter the passphrase"
    )]
    PassphraseRequired(String),
    #[error(
        "refusing to store the identity unencrypted: give a passphrase (ONVM_IDENTITY_PASSPHRASE) or pass --allow-plaintext-identity"
    )]
    PlaintextRefused,
    #[error("the passphrase must not be empty")]
    EmptyPassphrase,
    #[error("the identity at {path} is corrupt: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("i/o error on {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// The node's secret keys. Never logged or serialized outside the keystore.
pub struct Identity {
    endpoint_key: iroh::SecretKey,
    bls_secret: blst::min_sig::SecretKey,
    bls_public: blst::min_sig::PublicKey,
    bls_pop: blst::min_sig::Signature,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("endpoint_id", &self.endpoint_key.public().to_string())
            .field("bls_public_key", &self.bls_public_key_hex())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Fresh random keys.
    pub fn generate() -> Self {
        let endpoint_seed = Zeroizing::new(rand::random::<[u8; 32]>());
        let bls_ikm = Zeroizing::new(rand::random::<[u8; 32]>());
        Self::from_seeds(&endpoint_seed, &bls_ikm)
    }

    /// Keys derived from `seed` alone, so a seeded simulation replays byte for byte.
    #[cfg(test)]
    pub(crate) fn for_tests(seed: u64) -> Self {
        let endpoint =
            *blake3::hash(format!("onvm test endpoint key {seed}").as_bytes()).as_bytes();
        let bls = *blake3::hash(format!("onvm test bls key {seed}").as_bytes()).as_bytes();
        Self::from_seeds(&endpoint, &bls)
    }

    fn from_seeds(endpoint_seed: &[u8; 32], bls_ikm: &[u8; 32]) -> Self {
        let endpoint_key = iroh::SecretKey::from_bytes(endpoint_seed);
        // key_gen only fails for IKM shorter than 32 bytes, which the type rules out.
        let bls_secret = match blst::min_sig::SecretKey::key_gen(bls_ikm, &[]) {
            Ok(sk) => sk,
            Err(e) => unreachable!("BLS key_gen with 32-byte IKM failed: {e:?}"),
        };
        Self::from_keys(endpoint_key, bls_secret)
    }

    fn from_keys(endpoint_key: iroh::SecretKey, bls_secret: blst::min_sig::SecretKey) -> Self {
        let bls_public = bls_secret.sk_to_pk();
        let bls_pop = bls_secret.sign(&bls_public.compress(), BLS_POP_DST, &[]);
        Self {
            endpoint_key,
            bls_secret,
            bls_public,
            bls_pop,
        }
    }

    /// The ed25519 key iroh uses as the endpoint identity.
    pub fn endpoint_key(&self) -> &iroh::SecretKey {
        &self.endpoint_key
    }

    pub fn endpoint_id(&self) -> iroh::EndpointId {
        self.endpoint_key.public()
    }

    /// Compressed BLS public key (96 bytes).
    pub fn bls_public_key(&self) -> [u8; 96] {
        self.bls_public.compress()
    }

    pub fn bls_public_key_hex(&self) -> String {
        hex::encode(self.bls_public_key())
    }

    /// Compressed proof of possession (48 bytes): a signature over the public key.
    pub fn bls_proof_of_possession(&self) -> [u8; 48] {
        self.bls_pop.compress()
    }

    /// ed25519 signature with the endpoint key (64 bytes). `message` must already carry a
    /// domain tag and the network id.
    pub fn ed25519_sign(&self, message: &[u8]) -> [u8; 64] {
        self.endpoint_key.sign(message).to_bytes()
    }

    /// Signs `message` under a domain-separation tag that names what is signed.
    pub fn bls_sign(&self, dst: &[u8], message: &[u8]) -> [u8; 48] {
        self.bls_secret.sign(message, dst, &[]).compress()
    }
}

/// Aggregates compressed G1 signatures (each subgroup-checked); None if any is invalid.
pub fn bls_aggregate(signatures: &[&[u8]]) -> Option<[u8; 48]> {
    let sigs: Vec<blst::min_sig::Signature> = signatures
        .iter()
        .map(|s| blst::min_sig::Signature::sig_validate(s, true).ok())
        .collect::<Option<_>>()?;
    let refs: Vec<&blst::min_sig::Signature> = sigs.iter().collect();
    blst::min_sig::AggregateSignature::aggregate(&refs, false)
        .ok()
        .map(|a| a.to_signature().compress())
}

/// Checks that `signature` aggregates signatures of `message` by exactly the holders of
/// `public_keys` (a fast aggregate verify: sound only for keys whose proof of possession was
/// checked). False for no keys or any malformed input.
pub fn bls_verify_aggregate(
    public_keys: &[&[u8]],
    message: &[u8],
    signature: &[u8],
    dst: &[u8],
) -> bool {
    if public_keys.is_empty() {
        return false;
    }
    let Some(keys) = public_keys
        .iter()
        .map(|k| blst::min_sig::PublicKey::key_validate(k).ok())
        .collect::<Option<Vec<_>>>()
    else {
        return false;
    };
    let Ok(sig) = blst::min_sig::Signature::sig_validate(signature, true) else {
        return false;
    };
    let refs: Vec<&blst::min_sig::PublicKey> = keys.iter().collect();
    sig.fast_aggregate_verify(false, message, dst, &refs) == blst::BLST_ERROR::BLST_SUCCESS
}

/// Checks one member's signature on `message` with blst.
pub fn bls_verify(public_key: &[u8], message: &[u8], signature: &[u8], dst: &[u8]) -> bool {
    let (Ok(pk), Ok(sig)) = (
        blst::min_sig::PublicKey::key_validate(public_key),
        blst::min_sig::Signature::sig_validate(signature, true),
    ) else {
        return false;
    };
    sig.verify(false, message, dst, &[], &pk, false) == blst::BLST_ERROR::BLST_SUCCESS
}

impl Identity {
    fn secret_material(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(64));
        out.extend_from_slice(&self.endpoint_key.to_bytes());
        out.extend_from_slice(&self.bls_secret.to_bytes());
        out
    }

    fn from_secret_material(bytes: &[u8], path: &str) -> Result<Self, IdentityError> {
        let corrupt = |reason: &str| IdentityError::Corrupt {
            path: path.to_string(),
            reason: reason.to_string(),
        };
        if bytes.len() != 64 {
            return Err(corrupt("secret material has the wrong length"));
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&bytes[..32]);
        let endpoint_key = iroh::SecretKey::from_bytes(&seed);
        let bls_secret = blst::min_sig::SecretKey::from_bytes(&bytes[32..])
            .map_err(|_| corrupt("BLS secret key is not a valid scalar"))?;
        Ok(Self::from_keys(endpoint_key, bls_secret))
    }

    /// Writes the keystore to `path`, never replacing an existing file. With `passphrase` the
    /// secrets are encrypted; without it, `allow_plaintext` must be set.
    pub fn save(
        &self,
        path: &Path,
        passphrase: Option<&str>,
        allow_plaintext: bool,
    ) -> Result<(), IdentityError> {
        let shown = path.display().to_string();
        if path.exists() {
            return Err(IdentityError::AlreadyExists(shown));
        }
        let secret = match passphrase {
            Some("") => return Err(IdentityError::EmptyPassphrase),
            Some(pass) => KeystoreSecret::Encrypted(self.encrypt(pass)?),
            None if allow_plaintext => KeystoreSecret::Plaintext {
                secret_hex: Zeroizing::new(hex::encode(&*self.secret_material())),
            },
            None => return Err(IdentityError::PlaintextRefused),
        };
        let file = KeystoreFile {
            version: KEYSTORE_VERSION,
            endpoint_id: self.endpoint_id().to_string(),
            bls_public_key: self.bls_public_key_hex(),
            secret,
        };
        let json = Zeroizing::new(serde_json::to_vec_pretty(&file).map_err(|e| {
            IdentityError::Corrupt {
                path: shown.clone(),
                reason: e.to_string(),
            }
        })?);
        write_new_file_atomically(path, &json).map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => IdentityError::AlreadyExists(shown.clone()),
            _ => IdentityError::Io {
                path: shown.clone(),
                source,
            },
        })
    }

    /// Reads the keystore at `path`, decrypting it with `passphrase` when it is encrypted.
    pub fn load(path: &Path, passphrase: Option<&str>) -> Result<Self, IdentityError> {
        let shown = path.display().to_string();
        let bytes = match std::fs::read(path) {
            Ok(b) => Zeroizing::new(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(IdentityError::Missing(shown));
            }
            Err(source) => {
                return Err(IdentityError::Io {
                    path: shown,
                    source,
                });
            }
        };
        let file: KeystoreFile =
            serde_json::from_slice(&bytes).map_err(|e| IdentityError::Corrupt {
                path: shown.clone(),
                reason: e.to_string(),
            })?;
        if file.version != KEYSTORE_VERSION {
            return Err(IdentityError::Corrupt {
                path: shown,
                reason: format!("unsupported keystore version {}", file.version),
            });
        }
        let material = match &file.secret {
            KeystoreSecret::Plaintext { secret_hex } => {
                Zeroizing::new(hex::decode(secret_hex.as_str()).map_err(|e| {
                    IdentityError::Corrupt {
                        path: shown.clone(),
                        reason: e.to_string(),
                    }
                })?)
            }
            KeystoreSecret::Encrypted(enc) => {
                let pass =
                    passphrase.ok_or_else(|| IdentityError::PassphraseRequired(shown.clone()))?;
                enc.decrypt(pass, &file.endpoint_id, &file.bls_public_key, &shown)?
            }
        };
        let identity = Self::from_secret_material(&material, &shown)?;
        // The public parts are stored in clear for tooling; they must match the secrets.
        if identity.endpoint_id().to_string() != file.endpoint_id
            || identity.bls_public_key_hex() != file.bls_public_key
        {
            return Err(IdentityError::Corrupt {
                path: shown,
                reason: "public keys do not match the secret keys".into(),
            });
        }
        Ok(identity)
    }

    /// Whether the keystore at `path` needs a passphrase (without decrypting it).
    pub fn is_encrypted(path: &Path) -> Result<bool, IdentityError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => IdentityError::Missing(shown.clone()),
            _ => IdentityError::Io {
                path: shown.clone(),
                source,
            },
        })?;
        let file: KeystoreFile =
            serde_json::from_slice(&bytes).map_err(|e| IdentityError::Corrupt {
                path: shown,
                reason: e.to_string(),
            })?;
        Ok(matches!(file.secret, KeystoreSecret::Encrypted(_)))
    }

    fn encrypt(&self, passphrase: &str) -> Result<EncryptedSecret, IdentityError> {
        let salt: [u8; 16] = rand::random();
        let nonce: [u8; 24] = rand::random();
        let kdf = KdfParams {
            memory_kib: KDF_MEMORY_KIB,
            passes: KDF_PASSES,
            lanes: KDF_LANES,
            salt_hex: hex::encode(salt),
        };
        let key = kdf.derive(passphrase, "new keystore")?;
        let cipher = XChaCha20Poly1305::new((&*key).into());
        let endpoint_id = self.endpoint_id().to_string();
        let bls_public = self.bls_public_key_hex();
        let aad = associated_data(&endpoint_id, &bls_public);
        let ciphertext = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &self.secret_material(),
                    aad: &aad,
                },
            )
            .map_err(|_| IdentityError::Corrupt {
                path: "new keystore".into(),
                reason: "encryption failed".into(),
            })?;
        Ok(EncryptedSecret {
            scheme: ENCRYPTION_SCHEME.into(),
            kdf,
            nonce_hex: hex::encode(nonce),
            ciphertext_hex: hex::encode(ciphertext),
        })
    }
}

/// The public keys are bound into the ciphertext so they cannot be swapped in the file.
fn associated_data(endpoint_id: &str, bls_public_hex: &str) -> Vec<u8> {
    format!("onvm-keystore-v{KEYSTORE_VERSION}\n{endpoint_id}\n{bls_public_hex}").into_bytes()
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeystoreFile {
    version: u32,
    endpoint_id: String,
    bls_public_key: String,
    secret: KeystoreSecret,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum KeystoreSecret {
    Plaintext { secret_hex: Zeroizing<String> },
    Encrypted(EncryptedSecret),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EncryptedSecret {
    scheme: String,
    kdf: KdfParams,
    nonce_hex: String,
    ciphertext_hex: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KdfParams {
    memory_kib: u32,
    passes: u32,
    lanes: u32,
    salt_hex: String,
}

impl KdfParams {
    fn derive(&self, passphrase: &str, path: &str) -> Result<Zeroizing<[u8; 32]>, IdentityError> {
        let corrupt = |reason: String| IdentityError::Corrupt {
            path: path.to_string(),
            reason,
        };
        // Bound the cost a tampered file can make us pay.
        if self.memory_kib > 1024 * 1024 || self.passes > 64 || self.lanes > 16 {
            return Err(corrupt("key derivation parameters are out of range".into()));
        }
        let salt = hex::decode(&self.salt_hex).map_err(|e| corrupt(format!("salt: {e}")))?;
        let params = Params::new(self.memory_kib, self.passes, self.lanes, Some(32))
            .map_err(|e| corrupt(format!("key derivation parameters: {e}")))?;
        let mut key = Zeroizing::new([0u8; 32]);
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(passphrase.as_bytes(), &salt, &mut *key)
            .map_err(|e| corrupt(format!("key derivation: {e}")))?;
        Ok(key)
    }
}

impl EncryptedSecret {
    fn decrypt(
        &self,
        passphrase: &str,
        endpoint_id: &str,
        bls_public_hex: &str,
        path: &str,
    ) -> Result<Zeroizing<Vec<u8>>, IdentityError> {
        let corrupt = |reason: String| IdentityError::Corrupt {
            path: path.to_string(),
            reason,
        };
        if self.scheme != ENCRYPTION_SCHEME {
            return Err(corrupt(format!(
                "unknown encryption scheme `{}`",
                self.scheme
            )));
        }
        let nonce = hex::decode(&self.nonce_hex).map_err(|e| corrupt(format!("nonce: {e}")))?;
        if nonce.len() != 24 {
            return Err(corrupt("nonce must be 24 bytes".into()));
        }
        let ciphertext =
            hex::decode(&self.ciphertext_hex).map_err(|e| corrupt(format!("ciphertext: {e}")))?;
        let key = self.kdf.derive(passphrase, path)?;
        let cipher = XChaCha20Poly1305::new((&*key).into());
        let aad = associated_data(endpoint_id, bls_public_hex);
        cipher
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| IdentityError::WrongPassphrase(path.to_string()))
    }
}

/// Writes `bytes` to a temporary file, syncs it, then links it into place: the final file either
/// does not exist or is complete, and an existing file is never replaced.
fn write_new_file_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let mut tmp = tempfile_in(dir)?;
    tmp.1.write_all(bytes)?;
    tmp.1.sync_all()?;
    let linked = std::fs::hard_link(&tmp.0, path);
    let _ = std::fs::remove_file(&tmp.0);
    linked?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn tempfile_in(dir: &Path) -> std::io::Result<(std::path::PathBuf, std::fs::File)> {
    let name = format!(".identity-{}.tmp", hex::encode(rand::random::<[u8; 8]>()));
    let path = dir.join(name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(&path)?;
    Ok((path, file))
}

/// Verifies a BLS proof of possession: `pop` must be `public_key`'s signature over itself.
/// Lives here because only `identity` may use blst; the pure verifier for receipts reuses the
/// same rule in `rpc-api` later.
pub fn verify_proof_of_possession(public_key: &[u8], pop: &[u8]) -> bool {
    let Ok(pk) = blst::min_sig::PublicKey::key_validate(public_key) else {
        return false;
    };
    let Ok(sig) = blst::min_sig::Signature::sig_validate(pop, true) else {
        return false;
    };
    sig.verify(true, public_key, BLS_POP_DST, &[], &pk, false) == blst::BLST_ERROR::BLST_SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypted_round_trip_keeps_both_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.json");
        let id = Identity::generate();
        id.save(&path, Some("correct horse"), false).unwrap();
        assert!(Identity::is_encrypted(&path).unwrap());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&hex::encode(id.endpoint_key().to_bytes())));
        let back = Identity::load(&path, Some("correct horse")).unwrap();
        assert_eq!(back.endpoint_id(), id.endpoint_id());
        assert_eq!(back.bls_public_key(), id.bls_public_key());
        assert!(verify_proof_of_possession(
            &back.bls_public_key(),
            &back.bls_proof_of_possession()
        ));
    }

    #[test]
    fn wrong_or_missing_passphrase_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.json");
        Identity::generate()
            .save(&path, Some("right"), false)
            .unwrap();
        let err = Identity::load(&path, Some("wrong")).unwrap_err();
        assert!(matches!(err, IdentityError::WrongPassphrase(_)), "{err}");
        assert!(err.to_string().contains("wrong passphrase"));
        let err = Identity::load(&path, None).unwrap_err();
        assert!(matches!(err, IdentityError::PassphraseRequired(_)), "{err}");
    }

    #[test]
    fn plaintext_needs_the_flag_and_empty_passphrase_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.json");
        let id = Identity::generate();
        assert!(matches!(
            id.save(&path, None, false),
            Err(IdentityError::PlaintextRefused)
        ));
        assert!(!path.exists());
        assert!(matches!(
            id.save(&path, Some(""), false),
            Err(IdentityError::EmptyPassphrase)
        ));
        id.save(&path, None, true).unwrap();
        assert!(!Identity::is_encrypted(&path).unwrap());
        let back = Identity::load(&path, None).unwrap();
        assert_eq!(back.endpoint_id(), id.endpoint_id());
    }

    #[test]
    fn never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.json");
        let first = Identity::generate();
        first.save(&path, None, true).unwrap();
        let err = Identity::generate().save(&path, None, true).unwrap_err();
        assert!(matches!(err, IdentityError::AlreadyExists(_)));
        assert_eq!(
            Identity::load(&path, None).unwrap().endpoint_id(),
            first.endpoint_id()
        );
    }

    #[test]
    fn tampered_files_are_rejected_not_panicking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.json");
        Identity::generate().save(&path, Some("pw"), false).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        // Swap the advertised public key: the AEAD binds it, so decryption fails.
        let other = Identity::generate();
        let mut file: serde_json::Value = serde_json::from_str(&text).unwrap();
        file["endpoint_id"] = other.endpoint_id().to_string().into();
        std::fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
        assert!(Identity::load(&path, Some("pw")).is_err());
        std::fs::write(&path, b"{not json").unwrap();
        assert!(matches!(
            Identity::load(&path, Some("pw")),
            Err(IdentityError::Corrupt { .. })
        ));
        assert!(matches!(
            Identity::load(&dir.path().join("missing.json"), None),
            Err(IdentityError::Missing(_))
        ));
    }

    #[test]
    fn blst_signatures_verify_with_the_pure_rust_verifier() {
        // Receipts are signed here with blst and verified in rpc-api without it.
        let id = Identity::generate();
        let sig = id.bls_sign(BLS_SIG_DST, b"message");
        assert!(onvm_rpc_api::bls::verify(
            &id.bls_public_key(),
            b"message",
            &sig,
            onvm_rpc_api::bls::SIG_DST
        ));
        assert!(!onvm_rpc_api::bls::verify(
            &id.bls_public_key(),
            b"other",
            &sig,
            onvm_rpc_api::bls::SIG_DST
        ));
        assert!(!onvm_rpc_api::bls::verify(
            &Identity::generate().bls_public_key(),
            b"message",
            &sig,
            onvm_rpc_api::bls::SIG_DST
        ));
        assert!(onvm_rpc_api::bls::verify_proof_of_possession(
            &id.bls_public_key(),
            &id.bls_proof_of_possession()
        ));
        // A signature under another domain tag does not verify as a receipt signature.
        let pop_style = id.bls_sign(BLS_POP_DST, b"message");
        assert!(!onvm_rpc_api::bls::verify(
            &id.bls_public_key(),
            b"message",
            &pop_style,
            onvm_rpc_api::bls::SIG_DST
        ));
    }

    #[test]
    fn proof_of_possession_rejects_other_keys() {
        let a = Identity::generate();
        let b = Identity::generate();
        assert!(!verify_proof_of_possession(
            &a.bls_public_key(),
            &b.bls_proof_of_possession()
        ));
        assert!(!verify_proof_of_possession(
            &[0u8; 96],
            &a.bls_proof_of_possession()
        ));
    }
}

//! Caller keys: the ed25519 key a client signs its calls with (`onvm key new`, `--key FILE`).
//! The key's public half is the caller id a program sees (`onvm_caller`) and receipts record.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use anyhow::{Context, Result, bail};
use onvm_rpc_api::caller::SigningKey;
use onvm_rpc_api::{Hash32, HexBytes};
use serde::{Deserialize, Serialize};

/// The key file: JSON, mode 600. `caller` is there to read; `secret_key` is what counts.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    version: u32,
    caller: Hash32,
    secret_key: HexBytes,
}

const KEY_FILE_VERSION: u32 = 1;

pub struct CallerKey(SigningKey);

impl CallerKey {
    pub fn caller(&self) -> Hash32 {
        Hash32(self.0.verifying_key().to_bytes())
    }

    pub fn signing_key(&self) -> &SigningKey {
        &self.0
    }

    /// Creates a new key in `path` (never overwriting a file) and returns it.
    pub fn create(path: &Path) -> Result<Self> {
        let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
        let file = KeyFile {
            version: KEY_FILE_VERSION,
            caller: Hash32(key.verifying_key().to_bytes()),
            secret_key: HexBytes(key.to_bytes().to_vec()),
        };
        let mut text = serde_json::to_string_pretty(&file)?;
        text.push('\n');
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .with_context(|| {
                format!(
                    "creating {} (an existing key file is never overwritten: choose another --out)",
                    path.display()
                )
            })?;
        out.write_all(text.as_bytes())
            .and_then(|_| out.sync_all())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(Self(key))
    }

    /// Reads a key file written by `create`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the key file {}", path.display()))?;
        let file: KeyFile = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not an onvm caller key file (make one with `onvm key new --out FILE`)",
                path.display()
            )
        })?;
        if file.version != KEY_FILE_VERSION {
            bail!(
                "{}: key file version {} is not supported (expects {KEY_FILE_VERSION})",
                path.display(),
                file.version
            );
        }
        let secret: [u8; 32] = file.secret_key.0.as_slice().try_into().map_err(|_| {
            anyhow::anyhow!(
                "{}: secret_key must be 32 bytes (64 hex digits)",
                path.display()
            )
        })?;
        let key = SigningKey::from_bytes(&secret);
        if Hash32(key.verifying_key().to_bytes()) != file.caller {
            bail!(
                "{}: `caller` does not belong to `secret_key` (the file was edited or damaged)",
                path.display()
            );
        }
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            eprintln!(
                "warning: {} is readable by other users; `chmod 600 {}`",
                path.display(),
                path.display()
            );
        }
        Ok(Self(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_key_loads_back_and_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("me.key");
        let made = CallerKey::create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(CallerKey::load(&path).unwrap().caller(), made.caller());
        assert!(CallerKey::create(&path).is_err());
        assert_eq!(CallerKey::load(&path).unwrap().caller(), made.caller());
    }

    #[test]
    fn a_damaged_key_file_is_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("me.key");
        CallerKey::create(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut file: serde_json::Value = serde_json::from_str(&text).unwrap();
        file["caller"] = serde_json::json!(Hash32([1; 32]));
        std::fs::write(&path, file.to_string()).unwrap();
        let e = CallerKey::load(&path).err().unwrap().to_string();
        assert!(e.contains("does not belong"), "{e}");
        std::fs::write(&path, "not json").unwrap();
        let e = CallerKey::load(&path).err().unwrap().to_string();
        assert!(e.contains("onvm key new"), "{e}");
    }
}

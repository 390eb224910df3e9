//! Content-addressed identifiers (DESIGN.md §4).
//!
//! Every id is 32 bytes shown as a short kind prefix followed by 64 lowercase hex digits, e.g.
//! `blob3b2a…`. Parsers accept the bare hex too, so ids copied out of other tools still work, but
//! an id of another kind (a `prog…` where a `blob…` is expected) is rejected with a reason.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdParseError {
    #[error("expected a {expected} id (`{expected}` + 64 hex digits), got a `{found}` id")]
    WrongPrefix {
        expected: &'static str,
        found: &'static str,
    },
    #[error(
        "malformed {expected} id: expected `{expected}` + 64 hex digits, got {len} characters after the prefix"
    )]
    BadLength { expected: &'static str, len: usize },
    #[error("malformed {expected} id: `{ch}` is not a hex digit")]
    BadHex { expected: &'static str, ch: char },
}

/// All id prefixes, so a parser can say which kind it was handed instead of "bad hex".
const KNOWN_PREFIXES: &[&str] = &["blob", "prog", "job", "rcpt", "dag", "upload"];

fn parse_hex32(input: &str, prefix: &'static str) -> Result<[u8; 32], IdParseError> {
    let trimmed = input.trim();
    let hex_part = match trimmed.strip_prefix(prefix) {
        Some(rest) => rest,
        None => {
            if let Some(found) = KNOWN_PREFIXES
                .iter()
                .find(|p| trimmed.starts_with(*p) && trimmed.len() == p.len() + 64)
            {
                return Err(IdParseError::WrongPrefix {
                    expected: prefix,
                    found,
                });
            }
            trimmed
        }
    };
    if hex_part.len() != 64 {
        return Err(IdParseError::BadLength {
            expected: prefix,
            len: hex_part.chars().count(),
        });
    }
    if let Some(ch) = hex_part.chars().find(|c| !c.is_ascii_hexdigit()) {
        return Err(IdParseError::BadHex {
            expected: prefix,
            ch,
        });
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut out).map_err(|_| IdParseError::BadLength {
        expected: prefix,
        len: hex_part.len(),
    })?;
    Ok(out)
}

macro_rules! define_id {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; 32]);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            pub const fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// The bare 64-digit hex, without the prefix.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", $prefix, hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_hex32(s, $prefix).map(Self)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.collect_str(self)
                } else {
                    self.0.serialize(s)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                    s.parse().map_err(serde::de::Error::custom)
                } else {
                    <[u8; 32]>::deserialize(d).map(Self)
                }
            }
        }
    };
}

define_id!(
    /// A blob: the BLAKE3 hash of its bytes, identical to the iroh-blobs hash.
    BlobId,
    "blob"
);
define_id!(
    /// A deployed program: BLAKE3 over a domain tag, the wasm hash and the deploy salt.
    ProgramId,
    "prog"
);

define_id!(
    /// An execution receipt: BLAKE3 over a domain tag and the receipt's canonical encoding.
    ReceiptId,
    "rcpt"
);

define_id!(
    /// A job: BLAKE3 over a domain tag, the program id and the client's request id.
    JobId,
    "job"
);

impl BlobId {
    /// The id of `bytes`: what the node and iroh-blobs compute for the same content.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }
}

/// A resumable chunked-upload session. Random, not content-derived: the content is not known yet.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UploadId(String);

impl UploadId {
    pub const PREFIX: &'static str = "upload";

    pub fn from_random(bytes: [u8; 16]) -> Self {
        Self(format!("{}{}", Self::PREFIX, hex::encode(bytes)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for UploadId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex_part = s.strip_prefix(Self::PREFIX).ok_or_else(|| {
            format!("malformed upload id: expected `upload` + 32 hex digits, got `{s}`")
        })?;
        if hex_part.len() != 32 || !hex_part.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!(
                "malformed upload id: expected `upload` + 32 hex digits, got `{s}`"
            ));
        }
        Ok(Self(s.to_ascii_lowercase()))
    }
}

impl TryFrom<String> for UploadId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<UploadId> for String {
    fn from(id: UploadId) -> String {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_id_is_blake3_and_round_trips_with_or_without_prefix() {
        let id = BlobId::of(b"hello");
        let shown = id.to_string();
        assert!(shown.starts_with("blob"));
        assert_eq!(shown.len(), 4 + 64);
        assert_eq!(shown[4..], *blake3::hash(b"hello").to_hex());
        assert_eq!(shown.parse::<BlobId>().unwrap(), id);
        assert_eq!(shown[4..].parse::<BlobId>().unwrap(), id);
        assert_eq!(
            shown
                .to_uppercase()
                .replace("BLOB", "blob")
                .parse::<BlobId>()
                .unwrap(),
            id
        );
    }

    #[test]
    fn wrong_prefix_is_named() {
        let prog = ProgramId::from_bytes([7; 32]).to_string();
        let err = prog.parse::<BlobId>().unwrap_err();
        assert_eq!(
            err,
            IdParseError::WrongPrefix {
                expected: "blob",
                found: "prog"
            }
        );
        assert!(err.to_string().contains("got a `prog` id"));
    }

    #[test]
    fn malformed_ids_say_why() {
        assert!(matches!(
            "blob1234".parse::<BlobId>(),
            Err(IdParseError::BadLength { len: 4, .. })
        ));
        let bad = format!("blob{}", "z".repeat(64));
        assert!(matches!(
            bad.parse::<BlobId>(),
            Err(IdParseError::BadHex { ch: 'z', .. })
        ));
        assert!("".parse::<BlobId>().is_err());
    }

    #[test]
    fn json_uses_the_prefixed_string() {
        let id = BlobId::of(b"");
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        let back: BlobId = serde_json::from_str(&json).unwrap();
        assert_eq!(back, id);
        let err = serde_json::from_str::<BlobId>("\"blobxyz\"").unwrap_err();
        assert!(err.to_string().contains("malformed blob id"));
    }

    #[test]
    fn upload_ids_validate() {
        let id = UploadId::from_random([0xab; 16]);
        assert_eq!(id.as_str().parse::<UploadId>().unwrap(), id);
        assert!("upload12".parse::<UploadId>().is_err());
        assert!("../../etc/passwd".parse::<UploadId>().is_err());
    }
}

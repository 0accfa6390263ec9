//! Credential formats: API keys (`sk-tg-api01-…`) for the data plane and admin keys
//! (`sk-tg-admin01-…`) for the control plane. A key carries a CRC-32 checksum so a
//! mistyped or truncated key is refused before any lookup; only its SHA-256 is stored.
//! Randomness comes in from the caller, so this module stays pure.

use sha2::{Digest, Sha256};

use crate::ids::base62_encode;

/// What a credential may call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    Api,
    Admin,
}

impl KeyKind {
    pub fn prefix(self) -> &'static str {
        match self {
            KeyKind::Api => "sk-tg-api01-",
            KeyKind::Admin => "sk-tg-admin01-",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Api => "api",
            KeyKind::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<KeyKind> {
        [KeyKind::Api, KeyKind::Admin]
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }
}

/// Length of the random body: 32 random bytes in base62.
const BODY_LEN: usize = 43;
/// Length of the checksum: CRC-32 in base62, zero-padded.
const CHECKSUM_LEN: usize = 6;

/// A secret that has the shape of one of our keys (not yet known to exist).
#[derive(Clone, PartialEq, Eq)]
pub struct WellFormedKey {
    kind: KeyKind,
    secret: String,
}

impl std::fmt::Debug for WellFormedKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "WellFormedKey({})", self.hint())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("the key does not start with a known prefix")]
    UnknownPrefix,
    #[error("the key has the wrong length or characters")]
    Malformed,
    #[error("the key's checksum does not match: it was probably mistyped or truncated")]
    BadChecksum,
}

fn checksum(prefix: &str, body: &str) -> String {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(prefix.as_bytes());
    hasher.update(body.as_bytes());
    let encoded = base62_encode(&hasher.finalize().to_be_bytes());
    format!("{encoded:0>width$}", width = CHECKSUM_LEN)
}

impl WellFormedKey {
    /// A new key of `kind` from 32 random bytes.
    pub fn generate(kind: KeyKind, random: [u8; 32]) -> WellFormedKey {
        let encoded = base62_encode(&random);
        let body = format!("{encoded:0>width$}", width = BODY_LEN);
        let checksum = checksum(kind.prefix(), &body);
        WellFormedKey {
            kind,
            secret: format!("{}{body}{checksum}", kind.prefix()),
        }
    }

    /// Checks prefix, length, alphabet and checksum.
    pub fn parse(secret: &str) -> Result<WellFormedKey, KeyFormatError> {
        let kind = [KeyKind::Api, KeyKind::Admin]
            .into_iter()
            .find(|kind| secret.starts_with(kind.prefix()))
            .ok_or(KeyFormatError::UnknownPrefix)?;
        let rest = &secret[kind.prefix().len()..];
        if rest.len() != BODY_LEN + CHECKSUM_LEN || !rest.bytes().all(|byte| byte.is_ascii_alphanumeric()) {
            return Err(KeyFormatError::Malformed);
        }
        let (body, given_checksum) = rest.split_at(BODY_LEN);
        if checksum(kind.prefix(), body) != given_checksum {
            return Err(KeyFormatError::BadChecksum);
        }
        Ok(WellFormedKey {
            kind,
            secret: secret.to_owned(),
        })
    }

    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    pub fn expose_secret(&self) -> &str {
        &self.secret
    }

    /// What is stored: the SHA-256 of the secret, hex. Keys are 256-bit random, so a fast
    /// hash is enough; a slow password hash would only add latency to every request.
    pub fn hash(&self) -> String {
        let digest = Sha256::digest(self.secret.as_bytes());
        digest.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    /// What is shown after creation: prefix, four characters, an ellipsis, the last four.
    pub fn hint(&self) -> String {
        let prefix = self.kind.prefix();
        let body = &self.secret[prefix.len()..];
        format!("{prefix}{}...{}", &body[..4], &body[body.len() - 4..])
    }
}

#[cfg(test)]
mod tests;

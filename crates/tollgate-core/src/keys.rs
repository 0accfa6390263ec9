//! Credential formats: API keys (`sk-tg-api01-…`) for the data plane and admin keys
//! (`sk-tg-admin01-…`) for the control plane. A key carries a CRC-32 checksum so a
//! mistyped or truncated key is refused before any lookup; only its SHA-256 is stored.
//! Randomness comes in from the caller, so this module stays pure. Also the rule of which
//! models an API key may call (`AllowedModels`).

use sha2::{Digest, Sha256};

use crate::catalog::Catalog;
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

/// The models an API key may call: every model (no entries), or the catalogue models its
/// entries name, each a model id or an alias. An entry stands for the model the catalogue
/// resolves it to when a request comes, so a request may name that model by its id or by
/// any alias of it; an entry the catalogue no longer knows allows nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowedModels {
    entries: Vec<String>,
}

/// Why a list of allowed models was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllowedModelsError {
    #[error("a key allows at most {} models", AllowedModels::ENTRIES_MAX)]
    TooMany,
    #[error("'{0}' is not a model id: 1 to 128 printable characters, no spaces or commas")]
    Malformed(String),
    #[error("'{0}' is not a model of the catalogue")]
    UnknownModel(String),
}

impl AllowedModels {
    pub const ENTRIES_MAX: usize = 100;
    const ENTRY_BYTES_MAX: usize = 128;

    /// Every model.
    pub fn all() -> AllowedModels {
        AllowedModels::default()
    }

    /// A list an admin gives: each entry trimmed, well formed and known to `catalog` (a
    /// typo would otherwise lock the key out silently); duplicates dropped, order kept.
    /// An empty list allows every model.
    pub fn parse<S: AsRef<str>>(
        entries: &[S],
        catalog: &Catalog,
    ) -> Result<AllowedModels, AllowedModelsError> {
        if entries.len() > AllowedModels::ENTRIES_MAX {
            return Err(AllowedModelsError::TooMany);
        }
        let mut kept: Vec<String> = Vec::with_capacity(entries.len());
        for entry in entries {
            let entry = entry.as_ref().trim();
            let well_formed = !entry.is_empty()
                && entry.len() <= AllowedModels::ENTRY_BYTES_MAX
                && entry.bytes().all(|byte| byte.is_ascii_graphic() && byte != b',');
            if !well_formed {
                return Err(AllowedModelsError::Malformed(entry.to_owned()));
            }
            if catalog.resolve(entry).is_none() {
                return Err(AllowedModelsError::UnknownModel(entry.to_owned()));
            }
            if !kept.iter().any(|known| known == entry) {
                kept.push(entry.to_owned());
            }
        }
        Ok(AllowedModels { entries: kept })
    }

    /// A list as it was stored, taken as it is (the catalogue may have changed since).
    pub fn from_stored(entries: Vec<String>) -> AllowedModels {
        AllowedModels { entries }
    }

    /// The entries; empty when every model is allowed.
    pub fn entries(&self) -> &[String] {
        &self.entries
    }

    pub fn allows_all(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether a request may call `model_id`, the catalogue model its `model` resolved to.
    pub fn allows(&self, catalog: &Catalog, model_id: &str) -> bool {
        self.allows_all()
            || self.entries.iter().any(|entry| {
                entry == model_id
                    || catalog
                        .resolve(entry)
                        .is_some_and(|resolved| resolved.model.id == model_id)
            })
    }
}

#[cfg(test)]
mod tests;

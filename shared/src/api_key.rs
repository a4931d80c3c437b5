//! The API key format: `dlk_<key id>.<secret><checksum>`.
//!
//! - `dlk_` is a fixed prefix that secret scanners can match on.
//! - The key id (16 base32 characters, 80 random bits) is public: it names
//!   the key in listings and lets the service find the stored hash without
//!   storing the secret.
//! - The secret is 52 base32 characters (256 random bits); only its SHA-256
//!   hash is stored.
//! - The checksum (7 base32 characters, the first 32 bits of the SHA-256 of
//!   everything before it) lets a scanner tell a real key from a look-alike
//!   offline, and lets the service refuse a mistyped key without a lookup.

use crate::secret::{SecretHash, base32, is_base32, random_bytes};

/// The prefix every API key starts with.
pub const API_KEY_PREFIX: &str = "dlk_";
/// The scope that allows minting auth codes.
pub const SCOPE_USER_LINK: &str = "user_link";
/// Every scope a key can carry.
pub const KNOWN_SCOPES: &[&str] = &[SCOPE_USER_LINK];

const KEY_ID_LEN: usize = 16;
const SECRET_LEN: usize = 52;
const CHECKSUM_LEN: usize = 7;
const API_KEY_LEN: usize = API_KEY_PREFIX.len() + KEY_ID_LEN + 1 + SECRET_LEN + CHECKSUM_LEN;

/// Why a presented text is not an API key. Deliberately vague towards
/// clients: every variant maps to the same UNAUTHENTICATED status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyFormatError {
    /// Wrong prefix, length or characters.
    #[error("not a devicelink API key")]
    Malformed,
    /// Well-formed, but the checksum does not match: a typo or a truncation.
    #[error("API key checksum does not match")]
    BadChecksum,
}

/// The public id of an API key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyId(String);

impl KeyId {
    /// Parses a key id as shown in listings.
    pub fn parse(text: &str) -> Option<Self> {
        (text.len() == KEY_ID_LEN && is_base32(text)).then(|| Self(text.to_owned()))
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A freshly generated key: the text to show once, and what to store.
pub struct NewApiKey {
    /// The full key text. Shown to the operator once, never stored or logged.
    pub text: String,
    /// The key's public id.
    pub key_id: KeyId,
    /// The hash of the secret part, the only thing stored.
    pub secret_hash: SecretHash,
}

impl std::fmt::Debug for NewApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewApiKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// A presented key that has the right form; whether it is known, active and
/// of the right app is for the caller to check against storage.
pub struct PresentedApiKey {
    /// The key's public id, to look the stored hash up by.
    pub key_id: KeyId,
    /// The hash of the presented secret, to compare with the stored one.
    pub secret_hash: SecretHash,
}

impl std::fmt::Debug for PresentedApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresentedApiKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Generates a new key from the OS random generator.
pub fn generate() -> NewApiKey {
    let key_id = KeyId(base32(&random_bytes::<10>()));
    let secret = base32(&random_bytes::<32>());
    let body = format!("{API_KEY_PREFIX}{key_id}.{secret}");
    let text = format!("{body}{}", checksum(&body));
    NewApiKey {
        text,
        key_id,
        secret_hash: SecretHash::of(&[secret.as_bytes()]),
    }
}

/// Checks a presented key's form and checksum and hashes its secret.
pub fn parse(text: &str) -> Result<PresentedApiKey, ApiKeyFormatError> {
    if text.len() != API_KEY_LEN || !text.is_ascii() {
        return Err(ApiKeyFormatError::Malformed);
    }
    let Some(rest) = text.strip_prefix(API_KEY_PREFIX) else {
        return Err(ApiKeyFormatError::Malformed);
    };
    let (key_id, rest) = rest.split_at(KEY_ID_LEN);
    let Some(rest) = rest.strip_prefix('.') else {
        return Err(ApiKeyFormatError::Malformed);
    };
    let (secret, presented_checksum) = rest.split_at(SECRET_LEN);
    if !is_base32(key_id) || !is_base32(secret) || !is_base32(presented_checksum) {
        return Err(ApiKeyFormatError::Malformed);
    }
    let body = &text[..text.len() - CHECKSUM_LEN];
    if checksum(body) != presented_checksum {
        return Err(ApiKeyFormatError::BadChecksum);
    }
    Ok(PresentedApiKey {
        key_id: KeyId(key_id.to_owned()),
        secret_hash: SecretHash::of(&[secret.as_bytes()]),
    })
}

fn checksum(body: &str) -> String {
    let digest = SecretHash::of(&[body.as_bytes()]);
    base32(&digest.as_bytes()[..4])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_parses_back_to_its_id_and_hash() {
        let key = generate();
        assert_eq!(key.text.len(), API_KEY_LEN);
        assert!(key.text.starts_with("dlk_"));
        let parsed = parse(&key.text).expect("a generated key parses");
        assert_eq!(parsed.key_id, key.key_id);
        assert!(parsed.secret_hash.matches(&key.secret_hash));
    }

    #[test]
    fn a_changed_character_breaks_the_checksum() {
        let key = generate();
        let mut chars: Vec<char> = key.text.chars().collect();
        chars[30] = if chars[30] == 'a' { 'b' } else { 'a' };
        let tampered: String = chars.into_iter().collect();
        assert_eq!(parse(&tampered).err(), Some(ApiKeyFormatError::BadChecksum));
    }

    #[test]
    fn other_texts_are_malformed() {
        for text in ["", "dlk_", "Bearer x", &"a".repeat(API_KEY_LEN)] {
            assert_eq!(
                parse(text).err(),
                Some(ApiKeyFormatError::Malformed),
                "{text}"
            );
        }
        let key = generate();
        let upper = key.text.to_uppercase();
        assert!(parse(&upper).is_err());
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let key = generate();
        let shown = format!("{key:?}");
        assert!(!shown.contains(&key.text[21..]), "{shown}");
    }
}

//! The auth code and the Redis record both services read.
//!
//! authcode writes one record per code, under a key derived from the code's
//! SHA-256 hash and with the code's TTL; registration reads it to redeem the
//! code. A Redis dump therefore holds no usable code.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;

use crate::secret::{SecretHash, base32, is_base32, random_bytes};
use crate::validate::AppId;

/// The length of an auth code's text: 256 random bits in base32.
pub const AUTH_CODE_LEN: usize = 52;

/// A single-use authentication code. Its text is a secret: it has no
/// `Display` and its `Debug` shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthCode(String);

impl AuthCode {
    /// Generates a fresh code from the OS random generator.
    pub fn generate() -> Self {
        Self(base32(&random_bytes::<32>()))
    }

    /// Accepts text of an auth code's form: 52 characters of `a-z2-7`.
    pub fn parse(text: &str) -> Option<Self> {
        (text.len() == AUTH_CODE_LEN && is_base32(text)).then(|| Self(text.to_owned()))
    }

    /// The code's text, to hand to the customer's backend once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The hash the code is stored and looked up under.
    pub fn hash(&self) -> SecretHash {
        SecretHash::of(&[b"devicelink/auth-code/v1:", self.0.as_bytes()])
    }
}

impl std::fmt::Debug for AuthCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthCode(..)")
    }
}

/// The longest a code may live (authcode refuses a longer
/// `AUTH_CODE_TTL_SECS`): the expiry assumed for a record that does not
/// carry its own.
pub const MAX_AUTH_CODE_TTL: Duration = Duration::from_secs(3600);

/// The Redis key of a code's record, minted for `app_id`. It carries the
/// app's hash tag ([`crate::limits::app_hash_tag`]), the one its mint
/// limits carry, so that in a Redis Cluster the mint decides its limits and
/// stores its code in one script on one slot. Registration knows the app
/// from `CreateUser`: a code presented with another app id is not found.
pub fn redis_key(key_prefix: &str, app_id: AppId, code_hash: &SecretHash) -> String {
    const PREFIX: &str = "authcode:";
    // The hash tag (18 characters), a colon and the hash in hex.
    let mut key = String::with_capacity(key_prefix.len() + PREFIX.len() + 18 + 1 + 64);
    key.push_str(key_prefix);
    key.push_str(PREFIX);
    crate::limits::push_app_hash_tag(&mut key, app_id);
    key.push(':');
    crate::secret::push_lower_hex(&mut key, code_hash.as_bytes());
    key
}

/// What a minted code stands for. Stored protobuf-encoded in Redis.
#[derive(Clone, PartialEq, Message)]
pub struct AuthCodeRecord {
    /// The app of the API key that minted the code (a UUID).
    #[prost(string, tag = "1")]
    pub app_id: String,
    /// The customer's identifier of the user.
    #[prost(string, tag = "2")]
    pub external_id: String,
    /// When the code was minted, in milliseconds since the Unix epoch.
    #[prost(int64, tag = "3")]
    pub minted_at_unix_ms: i64,
    /// The public id of the API key that minted the code, for audit.
    #[prost(string, tag = "4")]
    pub key_id: String,
    /// When the code stops being redeemable, in milliseconds since the Unix
    /// epoch; 0 in records written before it existed (see
    /// [`AuthCodeRecord::expires_at`]). A retry of its redemption is
    /// answered until then, not after.
    #[prost(int64, tag = "5")]
    pub expires_at_unix_ms: i64,
    /// The SHA-256 of the device's code verifier when the code was minted
    /// with a `code_challenge` (see [`crate::code_challenge`]); empty when
    /// it was not. Inside the seal, so it cannot be stripped in Redis.
    #[prost(bytes = "vec", tag = "6")]
    pub code_challenge: Vec<u8>,
}

impl AuthCodeRecord {
    /// The record's bytes as stored in Redis.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    /// Reads a stored record back.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, prost::DecodeError> {
        Self::decode(bytes)
    }

    /// When the code stops being redeemable. A record without its expiry
    /// is given the longest a code may live, [`MAX_AUTH_CODE_TTL`] after
    /// minting: never earlier than the truth.
    pub fn expires_at(&self) -> SystemTime {
        if self.expires_at_unix_ms > 0 {
            return from_unix_millis(self.expires_at_unix_ms);
        }
        from_unix_millis(self.minted_at_unix_ms) + MAX_AUTH_CODE_TTL
    }
}

/// The time `millis` after the Unix epoch (the epoch itself if negative).
fn from_unix_millis(millis: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_code_parses_and_hashes_stably() {
        let code = AuthCode::generate();
        let again = AuthCode::parse(code.expose()).expect("a generated code parses");
        assert!(code.hash().matches(&again.hash()));
        // Domain-separated: not the plain SHA-256 of the code.
        assert!(
            !code
                .hash()
                .matches(&SecretHash::of(&[code.expose().as_bytes()]))
        );
    }

    #[test]
    fn the_redis_key_holds_the_hash_not_the_code() {
        let code = AuthCode::generate();
        let app_id = AppId(uuid::Uuid::from_u128(7));
        let key = redis_key("t:", app_id, &code.hash());
        assert!(key.starts_with("t:authcode:{"), "{key}");
        assert!(!key.contains(code.expose()));
        assert!(key.contains(&crate::limits::app_hash_tag(app_id)), "{key}");
    }

    #[test]
    fn malformed_codes_are_refused() {
        for text in [
            "",
            "short",
            &"A".repeat(AUTH_CODE_LEN),
            &"a".repeat(AUTH_CODE_LEN + 1),
        ] {
            assert!(AuthCode::parse(text).is_none(), "{text}");
        }
    }

    #[test]
    fn records_round_trip() {
        let record = AuthCodeRecord {
            app_id: "app".into(),
            external_id: "user-1".into(),
            minted_at_unix_ms: 42,
            key_id: "k".into(),
            expires_at_unix_ms: 600_042,
            code_challenge: vec![7; 32],
        };
        assert_eq!(
            AuthCodeRecord::from_bytes(&record.to_bytes()).ok(),
            Some(record)
        );
    }

    #[test]
    fn a_record_knows_its_expiry_or_assumes_the_longest() {
        let mut record = AuthCodeRecord {
            app_id: "app".into(),
            external_id: "user-1".into(),
            minted_at_unix_ms: 1_000,
            key_id: "k".into(),
            expires_at_unix_ms: 61_000,
            code_challenge: Vec::new(),
        };
        assert_eq!(
            record.expires_at(),
            UNIX_EPOCH + Duration::from_millis(61_000)
        );
        record.expires_at_unix_ms = 0;
        assert_eq!(
            record.expires_at(),
            UNIX_EPOCH + Duration::from_millis(1_000) + MAX_AUTH_CODE_TTL
        );
    }
}

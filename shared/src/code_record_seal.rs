//! Code records that cannot be forged from Redis.
//!
//! Anyone who can write to the Redis (a shared instance, a leaked password,
//! plaintext traffic) could otherwise store a record for any external id
//! under a code of their own making and redeem it: an account takeover
//! without an API key. authcode therefore seals each record with an
//! HMAC-SHA256 under `AUTH_CODE_RECORD_KEY`, bound to the code's hash (so a
//! genuine record copied under another code is refused too), and
//! registration opens it with the same key, or with
//! `AUTH_CODE_RECORD_KEY_PREVIOUS` while a rotation is under way.
//!
//! The tag travels as the record's last protobuf field (15, bytes): the
//! value is the record's own encoding followed by that field, so the MAC
//! covers the exact bytes stored, and a reader that predates the seal
//! decodes the record and ignores the field (authcode can be rolled out
//! before registration).
//!
//! The seal covers every field, the device-bound code's `code_challenge`
//! among them ([`crate::code_challenge`]): a Redis writer who strips the
//! challenge from a leaked code's record breaks its seal. A registration
//! that predates device binding would ignore the challenge, though, so
//! registration is rolled out before backends start sending challenges.

use std::sync::Arc;

use hmac::{KeyInit, Mac};
use sha2::Sha256;

use crate::auth_code::AuthCodeRecord;
use crate::config::{ConfigError, optional, required};
use crate::secret::SecretHash;

/// The key that seals new code records, shared by both services.
pub const AUTH_CODE_RECORD_KEY: &str = "AUTH_CODE_RECORD_KEY";
/// The key that sealed records before the current one; set while rotating,
/// for at least a code's lifetime, then removed.
pub const AUTH_CODE_RECORD_KEY_PREVIOUS: &str = "AUTH_CODE_RECORD_KEY_PREVIOUS";

/// The shortest key accepted, in bytes of its text: 256 bits when written
/// as base64 (`openssl rand -base64 32` gives 44 characters).
pub const MIN_KEY_LEN: usize = 32;

/// Separates this MAC from any other use of the same key.
const DOMAIN: &[u8] = b"devicelink/auth-code-record/v1\0";
/// The tag's field number and wire type (length-delimited), then its
/// length: the two bytes that open the trailer.
const TRAILER_HEADER: [u8; 2] = [(15 << 3) | 2, TAG_LEN as u8];
const TAG_LEN: usize = 32;
const TRAILER_LEN: usize = TRAILER_HEADER.len() + TAG_LEN;

type HmacSha256 = hmac::Hmac<Sha256>;

/// The record keys one service holds, each as the HMAC state it keys
/// (its padded key already hashed: two SHA-256 blocks a seal does not
/// repeat). Cheap to clone; the keys never appear in `Debug` output.
#[derive(Clone)]
pub struct RecordKeys {
    current: Arc<HmacSha256>,
    previous: Option<Arc<HmacSha256>>,
}

impl std::fmt::Debug for RecordKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordKeys")
            .field("previous", &self.previous.is_some())
            .finish_non_exhaustive()
    }
}

/// Why a stored value is not a record to act on.
#[derive(Debug, thiserror::Error)]
pub enum UnsealError {
    /// No key accepts its tag: forged, altered, moved to another code, or
    /// sealed with a key no longer held.
    #[error("the code record's seal does not verify")]
    Unauthenticated,
    /// The seal verifies but the record inside does not decode: a bug, not
    /// an attack.
    #[error("unreadable auth code record: {0}")]
    Unreadable(#[from] prost::DecodeError),
}

impl RecordKeys {
    /// Keys from their text: `current` seals and opens, `previous` only
    /// opens. Each must be at least [`MIN_KEY_LEN`] bytes.
    pub fn new(current: &str, previous: Option<&str>) -> Result<Self, ConfigError> {
        Ok(Self {
            current: key(AUTH_CODE_RECORD_KEY, current)?,
            previous: previous
                .map(|text| key(AUTH_CODE_RECORD_KEY_PREVIOUS, text))
                .transpose()?,
        })
    }

    /// `AUTH_CODE_RECORD_KEY` (required) and
    /// `AUTH_CODE_RECORD_KEY_PREVIOUS` (optional).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::new(
            &required(AUTH_CODE_RECORD_KEY)?,
            optional(AUTH_CODE_RECORD_KEY_PREVIOUS).as_deref(),
        )
    }

    /// The value to store for `record` under the code hashed as
    /// `code_hash`.
    pub fn seal(&self, code_hash: &SecretHash, record: &AuthCodeRecord) -> Vec<u8> {
        // One allocation, the trailer's room included.
        let mut stored = Vec::with_capacity(prost::Message::encoded_len(record) + TRAILER_LEN);
        prost::Message::encode(record, &mut stored).expect("a Vec grows to any record's size");
        let tag = tag(&self.current, code_hash, &stored)
            .finalize()
            .into_bytes();
        stored.extend_from_slice(&TRAILER_HEADER);
        stored.extend_from_slice(&tag);
        stored
    }

    /// The record in a value stored under the code hashed as `code_hash`,
    /// if one of the keys sealed it for that code.
    pub fn open(
        &self,
        code_hash: &SecretHash,
        stored: &[u8],
    ) -> Result<AuthCodeRecord, UnsealError> {
        let split = stored
            .len()
            .checked_sub(TRAILER_LEN)
            .ok_or(UnsealError::Unauthenticated)?;
        let (record, trailer) = stored.split_at(split);
        let (header, claimed) = trailer.split_at(TRAILER_HEADER.len());
        if header != TRAILER_HEADER {
            return Err(UnsealError::Unauthenticated);
        }
        let verifies = |key: &HmacSha256| tag(key, code_hash, record).verify_slice(claimed).is_ok();
        if !(verifies(&self.current) || self.previous.as_deref().is_some_and(verifies)) {
            return Err(UnsealError::Unauthenticated);
        }
        Ok(AuthCodeRecord::from_bytes(record)?)
    }
}

/// The MAC state over the domain, the code's hash and the record's bytes.
fn tag(key: &HmacSha256, code_hash: &SecretHash, record: &[u8]) -> HmacSha256 {
    let mut mac = key.clone();
    mac.update(DOMAIN);
    mac.update(code_hash.as_bytes());
    mac.update(record);
    mac
}

/// Separates the audit log's hash of an external id from the records' MAC.
const AUDIT_SUBJECT_DOMAIN: &[u8] = b"devicelink/audit-subject/v1\0";

impl RecordKeys {
    /// The keyed hash that stands for an external id in audit events:
    /// HMAC-SHA256 under the current key, over the app and the external id,
    /// so that events of one person can be told apart without naming them,
    /// and nobody without the key can test a guess. Rotating the key starts
    /// new hashes for the same person.
    pub fn audit_subject_hash(&self, app_id: &str, external_id: &str) -> [u8; 32] {
        let mut mac = HmacSha256::clone(&self.current);
        mac.update(AUDIT_SUBJECT_DOMAIN);
        mac.update(app_id.as_bytes());
        mac.update(b"\0");
        mac.update(external_id.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

/// A key's HMAC state, refused when too short to be a secret.
fn key(variable: &'static str, text: &str) -> Result<Arc<HmacSha256>, ConfigError> {
    if text.len() < MIN_KEY_LEN {
        return Err(ConfigError::new(
            variable,
            format!(
                "must be at least {MIN_KEY_LEN} characters of random text \
                 (e.g. `openssl rand -base64 32`), got {}",
                text.len()
            ),
        ));
    }
    let mac = <HmacSha256 as KeyInit>::new_from_slice(text.as_bytes())
        .expect("HMAC takes keys of any length");
    Ok(Arc::new(mac))
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::auth_code::AuthCode;

    const KEY: &str = "an-example-record-key-of-32-bytes-or-more";
    const OTHER_KEY: &str = "another-example-record-key-32-bytes-long";

    fn record(external_id: &str) -> AuthCodeRecord {
        AuthCodeRecord {
            app_id: "0190f6a0-0000-7000-8000-000000000000".into(),
            external_id: external_id.into(),
            minted_at_unix_ms: 1_000,
            key_id: "k".into(),
            expires_at_unix_ms: 601_000,
            code_challenge: vec![9; 32],
        }
    }

    #[test]
    fn a_sealed_record_opens_for_its_code_only() {
        let keys = RecordKeys::new(KEY, None).unwrap();
        let code = AuthCode::generate().hash();
        let sealed = keys.seal(&code, &record("user-1"));
        assert_eq!(keys.open(&code, &sealed).unwrap(), record("user-1"));
        let elsewhere = AuthCode::generate().hash();
        assert!(matches!(
            keys.open(&elsewhere, &sealed),
            Err(UnsealError::Unauthenticated)
        ));
    }

    #[test]
    fn an_altered_or_unsealed_record_is_refused() {
        let keys = RecordKeys::new(KEY, None).unwrap();
        let code = AuthCode::generate().hash();
        let sealed = keys.seal(&code, &record("user-1"));
        // The same tag after a rewritten external id.
        let mut altered = record("victim").to_bytes();
        altered.extend_from_slice(&sealed[sealed.len() - TRAILER_LEN..]);
        // A record as written before seals existed, and one sealed by
        // someone without the key.
        let unsealed = record("victim").to_bytes();
        let forged = RecordKeys::new(OTHER_KEY, None)
            .unwrap()
            .seal(&code, &record("victim"));
        for stored in [altered, unsealed, forged, Vec::new()] {
            assert!(
                matches!(keys.open(&code, &stored), Err(UnsealError::Unauthenticated)),
                "{stored:?}"
            );
        }
    }

    #[test]
    fn a_device_bound_record_cannot_lose_its_challenge_in_redis() {
        let keys = RecordKeys::new(KEY, None).unwrap();
        let code = AuthCode::generate().hash();
        let sealed = keys.seal(&code, &record("user-1"));
        assert_eq!(
            keys.open(&code, &sealed).unwrap().code_challenge,
            vec![9; 32]
        );
        // The same record without its challenge, under the original tag:
        // what someone with Redis write access would store to redeem a
        // leaked code without the device's verifier.
        let mut stripped = AuthCodeRecord {
            code_challenge: Vec::new(),
            ..record("user-1")
        }
        .to_bytes();
        stripped.extend_from_slice(&sealed[sealed.len() - TRAILER_LEN..]);
        assert!(matches!(
            keys.open(&code, &stripped),
            Err(UnsealError::Unauthenticated)
        ));
    }

    #[test]
    fn the_previous_key_opens_during_rotation_and_never_seals() {
        let code = AuthCode::generate().hash();
        let old = RecordKeys::new(OTHER_KEY, None).unwrap();
        let rotating = RecordKeys::new(KEY, Some(OTHER_KEY)).unwrap();
        let sealed_before = old.seal(&code, &record("user-1"));
        assert!(rotating.open(&code, &sealed_before).is_ok());
        // What the rotating service seals, the old key cannot open: it is
        // sealed with the new one.
        assert!(
            old.open(&code, &rotating.seal(&code, &record("user-1")))
                .is_err()
        );
        let rotated = RecordKeys::new(KEY, None).unwrap();
        assert!(rotated.open(&code, &sealed_before).is_err());
    }

    #[test]
    fn a_reader_without_seals_still_decodes_a_sealed_record() {
        let keys = RecordKeys::new(KEY, None).unwrap();
        let code = AuthCode::generate().hash();
        let sealed = keys.seal(&code, &record("user-1"));
        assert_eq!(
            AuthCodeRecord::decode(sealed.as_slice()).unwrap(),
            record("user-1")
        );
    }

    #[test]
    fn short_keys_are_refused_naming_the_variable() {
        let error = RecordKeys::new("too-short", None).unwrap_err();
        assert_eq!(error.variable, AUTH_CODE_RECORD_KEY);
        let error = RecordKeys::new(KEY, Some("short")).unwrap_err();
        assert_eq!(error.variable, AUTH_CODE_RECORD_KEY_PREVIOUS);
        assert!(!format!("{:?}", RecordKeys::new(KEY, None).unwrap()).contains(KEY));
    }
}

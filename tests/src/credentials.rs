//! Credentials made by hand, to reach the checks a well-behaved client
//! never trips.

use devicelink_shared::api_key;
use devicelink_shared::secret::{SecretHash, base32, random_bytes};

/// `api_key` with its secret replaced by another random one and the
/// checksum recomputed: well formed, of a real key id, and wrong. Only the
/// stored hash's comparison can refuse it.
///
/// # Panics
/// When `api_key` is not a devicelink API key.
pub fn with_wrong_secret(api_key: &str) -> String {
    let real = api_key::parse(api_key).expect("a devicelink API key");
    let body = format!(
        "{}{}.{}",
        api_key::API_KEY_PREFIX,
        real.key_id,
        base32(&random_bytes::<32>())
    );
    let checksum = base32(&SecretHash::of(&[body.as_bytes()]).as_bytes()[..4]);
    let forged = format!("{body}{checksum}");
    let parsed = api_key::parse(&forged).expect("the forged key is well formed");
    assert_eq!(
        parsed.key_id, real.key_id,
        "the forged key names the real key"
    );
    assert!(
        !parsed.secret_hash.matches(&real.secret_hash),
        "the forged secret differs"
    );
    forged
}

/// The length of an API key's secret part (see `devicelink_shared::api_key`).
const API_KEY_SECRET_LEN: usize = 52;

/// The 52-character secret of an API key (`dlk_<key id>.<secret><checksum>`).
///
/// # Panics
/// When `api_key` has no `.`.
pub fn api_key_secret(api_key: &str) -> &str {
    let secret_start = api_key.find('.').expect("an API key has a dot") + 1;
    &api_key[secret_start..secret_start + API_KEY_SECRET_LEN]
}

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

/// Writes an API key row for `app_id` with exactly `scopes`, straight into
/// the test's database, as no admin call can (CreateApiKey knows one scope
/// only); returns the key's text. The key expires in an hour.
pub async fn insert_api_key(env: &crate::TestEnv, app_id: &str, scopes: &[&str]) -> String {
    let key = api_key::generate();
    let scopes: Vec<String> = scopes.iter().map(|&scope| scope.to_owned()).collect();
    env.database()
        .await
        .execute(
            "INSERT INTO api_keys (key_id, app_id, secret_hash, scopes, expires_at)
             VALUES ($1, $2::text::uuid, $3, $4, now() + interval '1 hour')",
            &[
                &key.key_id.as_str(),
                &app_id,
                &key.secret_hash.as_bytes().as_slice(),
                &scopes,
            ],
        )
        .await
        .expect("insert an API key");
    key.text
}

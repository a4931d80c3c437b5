//! Postgres holds only hashes: after a full flow, no column of any table
//! holds an API key, an auth code or an install token, nor the secret part
//! of one, in any encoding the services use for secrets or their hashes
//! (the text itself, its raw random bytes, hex, base64, base64url).

use devicelink_e2e::credentials::api_key_secret;
use devicelink_e2e::*;
use devicelink_shared::auth_code::AuthCode;
use devicelink_shared::pb;
use devicelink_shared::secret::{SecretHash, lower_hex};
use tonic::Code;

/// One stored value: where it is, and its bytes (a `bytea` column's raw
/// bytes, or any column's text form, where `bytea` shows as `\x` and hex).
struct Cell {
    place: String,
    bytes: Vec<u8>,
}

/// Every value of every column of every table in the test's database.
async fn every_cell(db: &tokio_postgres::Client) -> Vec<Cell> {
    let columns = db
        .query(
            "SELECT table_name::text, column_name::text, data_type::text
             FROM information_schema.columns WHERE table_schema = 'public'",
            &[],
        )
        .await
        .expect("list columns");
    let mut cells = Vec::new();
    for column in columns {
        let (table, name, data_type): (String, String, String) =
            (column.get(0), column.get(1), column.get(2));
        let place = format!("{table}.{name}");
        let as_text = db
            .query(&format!("SELECT \"{name}\"::text FROM \"{table}\""), &[])
            .await
            .unwrap_or_else(|error| panic!("read {place}: {error}"));
        cells.extend(as_text.iter().filter_map(|row| {
            row.get::<_, Option<String>>(0).map(|text| Cell {
                place: place.clone(),
                bytes: text.into_bytes(),
            })
        }));
        if data_type == "bytea" {
            let raw = db
                .query(&format!("SELECT \"{name}\" FROM \"{table}\""), &[])
                .await
                .unwrap_or_else(|error| panic!("read {place}: {error}"));
            cells.extend(raw.iter().filter_map(|row| {
                row.get::<_, Option<Vec<u8>>>(0).map(|bytes| Cell {
                    place: place.clone(),
                    bytes,
                })
            }));
        }
    }
    cells
}

/// The bytes lowercase base32 text (the services' secret alphabet) stands
/// for; `None` for other text.
fn base32_decode(text: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut bytes = Vec::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for character in text.bytes() {
        let value = ALPHABET.iter().position(|&letter| letter == character)?;
        buffer = (buffer << 5) | value as u32;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            bytes.push((buffer >> bits) as u8);
        }
    }
    Some(bytes)
}

/// `bytes` in base64 with `alphabet`'s last two characters, unpadded.
fn base64(bytes: &[u8], last_two: &str) -> String {
    let alphabet: Vec<char> = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
        .chars()
        .chain(last_two.chars())
        .collect();
    let mut text = String::new();
    for chunk in bytes.chunks(3) {
        let group = chunk
            .iter()
            .enumerate()
            .fold(0u32, |group, (index, &byte)| {
                group | (u32::from(byte) << (16 - 8 * index))
            });
        for sextet in 0..=chunk.len() {
            text.push(alphabet[((group >> (18 - 6 * sextet)) & 63) as usize]);
        }
    }
    text
}

/// Every form in which `secret` could sit in a column: its text, the raw
/// bytes of its base32 part, and each of those in hex, base64 and
/// base64url (padding aside, a prefix of the padded form).
fn encodings(secret: &str) -> Vec<(String, Vec<u8>)> {
    let mut forms = vec![("text".to_owned(), secret.as_bytes().to_vec())];
    let base32_part = secret.rsplit(['_', '.']).next().unwrap_or(secret);
    if let Some(raw) = base32_decode(base32_part) {
        forms.push(("raw bytes".to_owned(), raw));
    }
    let mut encoded = Vec::new();
    for (form, bytes) in &forms {
        encoded.push((format!("hex of its {form}"), lower_hex(bytes).into_bytes()));
        encoded.push((
            format!("hex of its {form}"),
            lower_hex(bytes).to_uppercase().into_bytes(),
        ));
        encoded.push((
            format!("base64 of its {form}"),
            base64(bytes, "+/").into_bytes(),
        ));
        encoded.push((
            format!("base64url of its {form}"),
            base64(bytes, "-_").into_bytes(),
        ));
    }
    forms.extend(encoded);
    forms
}

fn holds(cell: &Cell, needle: &[u8]) -> bool {
    cell.bytes
        .windows(needle.len())
        .any(|window| window == needle)
}

#[test]
fn the_encodings_are_those_of_the_rfc() {
    assert_eq!(base32_decode("mzxw6ytboi").as_deref(), Some(&b"foobar"[..]));
    assert_eq!(base64(b"foobar", "+/"), "Zm9vYmFy");
    assert_eq!(base64(b"fooba", "+/"), "Zm9vYmE");
    assert_eq!(base64(&[0xfb, 0xff], "-_"), "-_8");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tables_hold_only_hashes_of_the_secrets_a_full_flow_used() {
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let mut registration = env.registration().await;

    // A first device, its retry and a replay from another device.
    let first_code = env.mint(&api_key, "alice").await;
    let first = registration
        .create_user(create_user_request(&first_code, &app_id, phone("p1")))
        .await
        .expect("redeem")
        .into_inner();
    registration
        .create_user(create_user_request(&first_code, &app_id, phone("p1")))
        .await
        .expect("a retry");
    let replay = registration
        .create_user(create_user_request(&first_code, &app_id, phone("p2")))
        .await
        .expect_err("a replay");
    assert_eq!(replay.code(), Code::NotFound);
    status_of_token(&mut registration, &first.install_token)
        .await
        .expect("a status");
    // A second device, later reset; a code never redeemed.
    let second_code = env.mint(&api_key, "alice").await;
    let second = registration
        .create_user(create_user_request(&second_code, &app_id, tablet("t1")))
        .await
        .expect("redeem")
        .into_inner();
    registration
        .reset_install(authorized(
            pb::ResetInstallRequest {},
            &second.install_token,
        ))
        .await
        .expect("reset");
    let unused_code = env.mint(&api_key, "bob").await;

    let cells = every_cell(&env.database().await).await;
    for table in ["api_keys", "installs", "redeemed_codes", "code_replays"] {
        assert!(
            cells.iter().any(|cell| cell.place.starts_with(table)),
            "nothing read from {table}"
        );
    }
    // The scan sees what is stored: the hashes are there.
    for (what, hash) in [
        (
            "the API key's hash",
            SecretHash::of(&[api_key_secret(&api_key).as_bytes()]),
        ),
        (
            "the first code's hash",
            AuthCode::parse(&first_code).expect("a code").hash(),
        ),
        (
            "the first install token's hash",
            SecretHash::of(&[first.install_token.as_bytes()]),
        ),
    ] {
        assert!(
            cells.iter().any(|cell| holds(cell, hash.as_bytes())),
            "{what} is not stored, so the scan reads the wrong thing"
        );
    }

    for (what, secret) in [
        ("API key", api_key.as_str()),
        ("API key secret", api_key_secret(&api_key)),
        ("first code", first_code.as_str()),
        ("second code", second_code.as_str()),
        ("unused code", unused_code.as_str()),
        ("first install token", first.install_token.as_str()),
        ("second install token", second.install_token.as_str()),
        ("admin token", ADMIN_TOKEN),
    ] {
        for (form, needle) in encodings(secret) {
            if let Some(cell) = cells.iter().find(|cell| holds(cell, &needle)) {
                panic!("{} holds the {what} ({form})", cell.place);
            }
        }
    }
}

//! Random secrets, their text form and their hashes.
//!
//! Secrets are encoded in lowercase RFC 4648 base32 without padding: URL-safe,
//! case-insensitive when read aloud, and one "word" that a double click
//! selects whole.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const BASE32_ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// How many bytes of the operating system's generator a thread reads at
/// once: a `getrandom` per code cost a mint about 2% of its CPU. Small, so
/// that memory read by an attacker would give away at most 16 codes not
/// yet minted, the bytes a thread holds for them.
const RANDOM_POOL_BYTES: usize = 512;

/// Bytes read from the OS generator and not handed out yet; what was
/// handed out is zeroed, so no secret outlives its draw here.
struct RandomPool {
    bytes: [u8; RANDOM_POOL_BYTES],
    next: usize,
}

thread_local! {
    static RANDOM_POOL: std::cell::RefCell<RandomPool> = const {
        std::cell::RefCell::new(RandomPool { bytes: [0; RANDOM_POOL_BYTES], next: RANDOM_POOL_BYTES })
    };
}

/// Fills an array with bytes from the operating system's generator, read
/// a pool at a time per thread: each byte is the OS generator's and is
/// handed out once.
///
/// # Panics
/// When the OS generator fails, which leaves no safe way to mint secrets.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    if N > RANDOM_POOL_BYTES / 8 {
        fill_from_os(&mut bytes);
        return bytes;
    }
    RANDOM_POOL.with_borrow_mut(|pool| {
        if pool.next + N > RANDOM_POOL_BYTES {
            fill_from_os(&mut pool.bytes);
            pool.next = 0;
        }
        let drawn = &mut pool.bytes[pool.next..pool.next + N];
        bytes.copy_from_slice(drawn);
        drawn.fill(0);
        pool.next += N;
    });
    bytes
}

/// Fills `bytes` from the operating system's generator.
///
/// # Panics
/// When the OS generator fails, which leaves no safe way to mint secrets.
fn fill_from_os(bytes: &mut [u8]) {
    #[allow(clippy::expect_used)]
    getrandom::fill(bytes).expect("the operating system's random generator failed");
}

/// Encodes bytes as lowercase base32 without padding.
pub fn base32(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut buffer: u32 = 0;
    let mut bits = 0u32;
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            text.push(BASE32_ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        text.push(BASE32_ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    text
}

/// True when every character of `text` belongs to the base32 alphabet used
/// by [`base32`].
pub fn is_base32(text: &str) -> bool {
    // By range, not by searching the alphabet: every API key and code is
    // checked on every call, and a search per character showed in profiles.
    text.bytes()
        .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
}

/// The SHA-256 hash of a secret, the only form in which secrets are stored.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretHash([u8; 32]);

impl SecretHash {
    /// Hashes `parts` concatenated.
    pub fn of(parts: &[&[u8]]) -> Self {
        let mut hasher = Sha256::new();
        for part in parts {
            hasher.update(part);
        }
        Self(hasher.finalize().into())
    }

    /// Wraps a hash read back from storage.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    /// The raw hash, for storage.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The hash as lowercase hex, for Redis keys.
    pub fn to_hex(&self) -> String {
        lower_hex(&self.0)
    }

    /// Compares in constant time, so a caller cannot learn a stored hash byte
    /// by byte from response times.
    pub fn matches(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl std::fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretHash(..)")
    }
}

/// `bytes` as lowercase hex, in one allocation: it is on every mint's and
/// every redemption's path (Redis keys).
pub fn lower_hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    push_lower_hex(&mut text, bytes);
    text
}

/// Appends `bytes` to `text` as lowercase hex: keys built on every call
/// are written into one string rather than from pieces of their own.
pub fn push_lower_hex(text: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    text.reserve(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_matches_rfc4648_vectors() {
        assert_eq!(base32(b""), "");
        assert_eq!(base32(b"f"), "my");
        assert_eq!(base32(b"fo"), "mzxq");
        assert_eq!(base32(b"foo"), "mzxw6");
        assert_eq!(base32(b"foob"), "mzxw6yq");
        assert_eq!(base32(b"fooba"), "mzxw6ytb");
        assert_eq!(base32(b"foobar"), "mzxw6ytboi");
    }

    #[test]
    fn thirty_two_random_bytes_make_fifty_two_characters() {
        let text = base32(&random_bytes::<32>());
        assert_eq!(text.len(), 52);
        assert!(is_base32(&text));
    }

    #[test]
    fn drawn_bytes_never_repeat_across_pool_refills() {
        let draws = 3 * RANDOM_POOL_BYTES / 32;
        let seen: std::collections::HashSet<[u8; 32]> =
            (0..draws).map(|_| random_bytes::<32>()).collect();
        assert_eq!(seen.len(), draws);
        // What was handed out is zeroed in the pool.
        RANDOM_POOL.with_borrow(|pool| {
            assert!(pool.bytes[..pool.next].iter().all(|byte| *byte == 0));
        });
        let large: [u8; RANDOM_POOL_BYTES] = random_bytes();
        assert!(large.iter().any(|byte| *byte != 0));
    }

    #[test]
    fn base32_text_is_exactly_the_alphabet() {
        for byte in 0..=u8::MAX {
            let text = [byte];
            let text = String::from_utf8_lossy(&text);
            assert_eq!(
                is_base32(&text),
                BASE32_ALPHABET.contains(&byte),
                "byte {byte}"
            );
        }
    }

    #[test]
    fn lower_hex_spells_every_nibble() {
        assert_eq!(lower_hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(lower_hex(&[]), "");
    }

    #[test]
    fn hashes_compare_by_value() {
        let a = SecretHash::of(&[b"secret"]);
        assert!(a.matches(&SecretHash::of(&[b"sec", b"ret"])));
        assert!(!a.matches(&SecretHash::of(&[b"other"])));
        assert_eq!(format!("{a:?}"), "SecretHash(..)");
    }
}

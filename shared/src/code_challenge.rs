//! Device-bound codes: the challenge a code is minted with and the verifier
//! that redeems it (after RFC 7636, PKCE, method `S256` only).
//!
//! The app makes a random verifier and gives its backend only
//! `BASE64URL(SHA256(verifier))`, which the backend passes to
//! `MintAuthCode` as `code_challenge`. authcode seals the challenge inside
//! the code's record ([`crate::code_record_seal`]), so that nobody with
//! write access to Redis can strip it; registration redeems the code only
//! for the verifier that hashes to it. A code that leaks on its way from
//! the backend to the device is useless without the verifier, which never
//! left the device.
//!
//! Both types are parsed at the edge, so nothing below the handlers sees
//! unchecked text. The verifier is a secret: no `Display`, and its `Debug`
//! shows nothing of it. The challenge is not (it is a hash).

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::contract::rules;
use crate::validate::FieldViolation;

/// The only challenge method accepted: SHA-256.
pub const METHOD_S256: &str = "S256";
/// The length of a challenge's text: 32 bytes in unpadded base64url.
pub const CHALLENGE_LEN: usize = 43;

const BASE64URL_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The SHA-256 of a device's verifier, as minted into a code.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CodeChallenge([u8; 32]);

impl CodeChallenge {
    /// Parses `code_challenge` (and `code_challenge_method`, where empty
    /// means `S256`), naming `field` in what it reports: exactly 43
    /// characters of `A-Z a-z 0-9 - _`, the unpadded base64url of 32 bytes.
    pub fn parse(field: &str, text: &str, method: &str) -> Result<Self, FieldViolation> {
        let method_field = format!("{field}_method");
        rules::MINT_AUTH_CODE_REQUEST_CODE_CHALLENGE_METHOD.text(&method_field, method)?;
        let text = rules::MINT_AUTH_CODE_REQUEST_CODE_CHALLENGE
            .text(field, text)?
            .ok_or_else(|| FieldViolation::new(field, "is required"))?;
        // The declared charset accepts exactly the texts that decode.
        decode_base64url_32(text)
            .map(Self)
            .ok_or_else(|| FieldViolation::new(field, "must be the base64url of 32 bytes"))
    }

    /// The challenge stored in a code record: `None` for a record without
    /// one (empty), an error for bytes that are not a SHA-256.
    pub fn from_stored(bytes: &[u8]) -> Result<Option<Self>, ChallengeLengthError> {
        if bytes.is_empty() {
            return Ok(None);
        }
        <[u8; 32]>::try_from(bytes)
            .map(|hash| Some(Self(hash)))
            .map_err(|_| ChallengeLengthError(bytes.len()))
    }

    /// The challenge that `verifier` meets.
    pub fn of(verifier: &CodeVerifier) -> Self {
        Self(Sha256::digest(verifier.0.as_bytes()).into())
    }

    /// Whether `verifier` hashes to this challenge, compared in constant
    /// time.
    pub fn is_met_by(&self, verifier: &CodeVerifier) -> bool {
        self.0.ct_eq(&Self::of(verifier).0).into()
    }

    /// The 32 bytes, as stored.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The challenge's text, as an app sends it.
    pub fn to_text(&self) -> String {
        encode_base64url(&self.0)
    }
}

impl std::fmt::Debug for CodeChallenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CodeChallenge({})", self.to_text())
    }
}

/// A stored challenge that is not 32 bytes: a bug or a foreign writer.
#[derive(Debug, thiserror::Error)]
#[error("a stored code challenge has {0} bytes, not 32")]
pub struct ChallengeLengthError(pub usize);

/// The secret a device proves possession with. Never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct CodeVerifier(String);

impl CodeVerifier {
    /// Parses `code_verifier`: 43 to 128 characters of `A-Z a-z 0-9 - . _ ~`
    /// (RFC 7636, section 4.1). The text itself never appears in the error.
    pub fn parse(field: &str, text: &str) -> Result<Self, FieldViolation> {
        rules::CREATE_USER_REQUEST_CODE_VERIFIER
            .text(field, text)?
            .map(|text| Self(text.to_owned()))
            .ok_or_else(|| FieldViolation::new(field, "is required"))
    }

    /// The verifier's text, for a client (a test, an SDK) to send.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for CodeVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CodeVerifier(..)")
    }
}

/// Why a redemption's proof of possession fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifierMismatch {
    /// The code was minted with a challenge and no verifier came.
    Missing,
    /// A verifier came that does not hash to the code's challenge.
    Wrong,
    /// A verifier came for a code minted without a challenge. Refused, as
    /// RFC 7636's successors (OAuth 2.1, section 4.1.3) require: otherwise
    /// an attacker could plant a code minted without a challenge on a
    /// device that expects its own to be bound, and the device would not
    /// notice.
    Unexpected,
}

impl VerifierMismatch {
    /// A short name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Wrong => "wrong",
            Self::Unexpected => "unexpected",
        }
    }

    /// What the client is told: safe to show, it names no secret.
    pub fn message(self) -> &'static str {
        match self {
            Self::Missing => {
                "this auth code is bound to a device: send its code_verifier to redeem it"
            }
            Self::Wrong => "code_verifier does not match the auth code's code_challenge",
            Self::Unexpected => {
                "code_verifier was sent but the auth code was minted without a code_challenge; \
                 the backend must pass the app's code_challenge to MintAuthCode"
            }
        }
    }
}

/// The one decision of device-bound redemption: whether `verifier` may
/// redeem a code minted with `challenge`. A code without a challenge is
/// redeemed without a verifier, as before device binding existed.
pub fn check_possession(
    challenge: Option<&CodeChallenge>,
    verifier: Option<&CodeVerifier>,
) -> Result<(), VerifierMismatch> {
    match (challenge, verifier) {
        (None, None) => Ok(()),
        (Some(challenge), Some(verifier)) if challenge.is_met_by(verifier) => Ok(()),
        (Some(_), Some(_)) => Err(VerifierMismatch::Wrong),
        (Some(_), None) => Err(VerifierMismatch::Missing),
        (None, Some(_)) => Err(VerifierMismatch::Unexpected),
    }
}

/// The 32 bytes of `text`, if it is their unpadded base64url in canonical
/// form (the last character's two spare bits zero), so that each challenge
/// has exactly one text.
pub(crate) fn decode_base64url_32(text: &str) -> Option<[u8; 32]> {
    if text.len() != CHALLENGE_LEN {
        return None;
    }
    let mut bytes = [0u8; 32];
    let mut buffer: u32 = 0;
    let mut bits = 0u32;
    let mut written = 0;
    for &symbol in text.as_bytes() {
        let value = BASE64URL_ALPHABET.iter().position(|&b| b == symbol)?;
        buffer = (buffer << 6) | u32::try_from(value).ok()?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            *bytes.get_mut(written)? = (buffer >> bits) as u8;
            written += 1;
            buffer &= (1 << bits) - 1;
        }
    }
    (written == 32 && buffer == 0).then_some(bytes)
}

/// Unpadded base64url.
fn encode_base64url(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len().div_ceil(3) * 4);
    let mut buffer: u32 = 0;
    let mut bits = 0u32;
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            text.push(char::from(
                BASE64URL_ALPHABET[((buffer >> bits) & 63) as usize],
            ));
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        text.push(char::from(
            BASE64URL_ALPHABET[((buffer << (6 - bits)) & 63) as usize],
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7636, appendix B.
    const RFC_VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const RFC_CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn verifier(text: &str) -> CodeVerifier {
        CodeVerifier::parse("code_verifier", text).expect("a valid verifier")
    }

    #[test]
    fn the_rfc_example_verifier_meets_its_challenge() {
        let challenge = CodeChallenge::parse("code_challenge", RFC_CHALLENGE, "").unwrap();
        assert!(challenge.is_met_by(&verifier(RFC_VERIFIER)));
        assert_eq!(CodeChallenge::of(&verifier(RFC_VERIFIER)), challenge);
        assert_eq!(challenge.to_text(), RFC_CHALLENGE);
        assert!(!challenge.is_met_by(&verifier(&"a".repeat(43))));
    }

    #[test]
    fn challenges_of_another_form_or_method_are_refused_naming_the_field() {
        let last_bits_set = format!("{}d", &RFC_CHALLENGE[..42]);
        for text in [
            "",
            &RFC_CHALLENGE[..42],
            &format!("{RFC_CHALLENGE}="),
            &RFC_CHALLENGE.replace('-', "+"),
            last_bits_set.as_str(),
        ] {
            let violation = CodeChallenge::parse("code_challenge", text, "S256").unwrap_err();
            assert_eq!(violation.field, "code_challenge", "{text}");
        }
        let violation = CodeChallenge::parse("code_challenge", RFC_CHALLENGE, "plain").unwrap_err();
        assert_eq!(violation.field, "code_challenge_method");
    }

    #[test]
    fn verifiers_follow_rfc_7636_and_never_show() {
        for text in [
            "a".repeat(42),
            "a".repeat(129),
            format!("{}+", "a".repeat(43)),
            format!("{} ", "a".repeat(43)),
        ] {
            let violation = CodeVerifier::parse("code_verifier", &text).unwrap_err();
            assert!(!violation.description.contains(&text));
        }
        let allowed = format!("{}-._~", "Az09".repeat(10));
        assert_eq!(verifier(&allowed).expose(), allowed);
        assert_eq!(verifier(&"a".repeat(128)).expose().len(), 128);
        assert_eq!(format!("{:?}", verifier(RFC_VERIFIER)), "CodeVerifier(..)");
    }

    #[test]
    fn possession_is_decided_in_one_place() {
        let challenge = CodeChallenge::of(&verifier(RFC_VERIFIER));
        let right = verifier(RFC_VERIFIER);
        let wrong = verifier(&"b".repeat(43));
        assert_eq!(check_possession(None, None), Ok(()));
        assert_eq!(check_possession(Some(&challenge), Some(&right)), Ok(()));
        assert_eq!(
            check_possession(Some(&challenge), Some(&wrong)),
            Err(VerifierMismatch::Wrong)
        );
        assert_eq!(
            check_possession(Some(&challenge), None),
            Err(VerifierMismatch::Missing)
        );
        assert_eq!(
            check_possession(None, Some(&right)),
            Err(VerifierMismatch::Unexpected)
        );
    }

    #[test]
    fn stored_challenges_are_32_bytes_or_absent() {
        assert_eq!(CodeChallenge::from_stored(&[]).unwrap(), None);
        let challenge = CodeChallenge::of(&verifier(RFC_VERIFIER));
        assert_eq!(
            CodeChallenge::from_stored(challenge.as_bytes()).unwrap(),
            Some(challenge)
        );
        assert!(CodeChallenge::from_stored(&[1, 2, 3]).is_err());
    }

    #[test]
    fn base64url_round_trips() {
        for seed in 0..=255u8 {
            let bytes = [seed; 32].map(|b| b.wrapping_mul(31).wrapping_add(seed));
            let text = encode_base64url(&bytes);
            assert_eq!(text.len(), CHALLENGE_LEN);
            assert_eq!(decode_base64url_32(&text), Some(bytes));
        }
    }
}

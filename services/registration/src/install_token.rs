//! Install tokens: an install's own credential for status, watch and reset.
//!
//! A token is `dlit_` and 52 base32 characters. It is derived from the
//! redeemed auth code and a random nonce kept with the redemption:
//! `SHA-256("devicelink/install-token/v1:" || code || nonce)`. Only the
//! token's hash is stored, and the code is never stored, so neither a
//! database dump nor a leaked code alone yields a token; yet a retry that
//! presents the same code can be answered with the same token.

use devicelink_shared::auth_code::AuthCode;
use devicelink_shared::secret::{SecretHash, base32, is_base32, random_bytes};

/// The prefix of every install token.
pub const INSTALL_TOKEN_PREFIX: &str = "dlit_";
const SECRET_LEN: usize = 52;

/// The random part mixed into a token.
pub type TokenNonce = [u8; 16];

/// A fresh nonce from the OS generator.
pub fn new_nonce() -> TokenNonce {
    random_bytes()
}

/// An install token. Its text is a secret: `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct InstallToken(String);

impl InstallToken {
    /// The token of the redemption of `code` with `nonce`.
    pub fn derive(code: &AuthCode, nonce: &TokenNonce) -> Self {
        let secret = SecretHash::of(&[
            b"devicelink/install-token/v1:",
            code.expose().as_bytes(),
            nonce,
        ]);
        Self(format!(
            "{INSTALL_TOKEN_PREFIX}{}",
            base32(secret.as_bytes())
        ))
    }

    /// Accepts text of a token's form; anything else is no token at all.
    pub fn parse(text: &str) -> Option<Self> {
        let secret = text.strip_prefix(INSTALL_TOKEN_PREFIX)?;
        (secret.len() == SECRET_LEN && is_base32(secret)).then(|| Self(text.to_owned()))
    }

    /// The hash the install stores and is looked up by.
    pub fn hash(&self) -> SecretHash {
        SecretHash::of(&[self.0.as_bytes()])
    }

    /// The token's text, to return to the device once.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for InstallToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InstallToken(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_code_and_nonce_give_the_same_token() {
        let code = AuthCode::generate();
        let nonce = new_nonce();
        let token = InstallToken::derive(&code, &nonce);
        assert_eq!(token, InstallToken::derive(&code, &nonce));
        assert_ne!(token, InstallToken::derive(&code, &new_nonce()));
        assert_ne!(token, InstallToken::derive(&AuthCode::generate(), &nonce));
    }

    #[test]
    fn tokens_parse_back_and_others_do_not() {
        let token = InstallToken::derive(&AuthCode::generate(), &new_nonce());
        assert_eq!(InstallToken::parse(token.expose()), Some(token.clone()));
        assert!(InstallToken::parse("dlit_short").is_none());
        assert!(InstallToken::parse(&token.expose().replace("dlit_", "dlk__")).is_none());
        assert_eq!(format!("{token:?}"), "InstallToken(..)");
    }
}

//! A Postgres connection string as libpq reads it, TLS settings included.
//!
//! tokio-postgres parses `sslmode` only as far as `require`, and has no
//! `sslrootcert`: a URL written for libpq, `psql` or a managed database's
//! console (`?sslmode=verify-full&sslrootcert=ca.crt`) does not parse. So
//! both settings are taken out of the string here, in its URL form
//! (`postgres://...?sslmode=...`) and its key=value form
//! (`host=... sslmode=...`), and what is left goes to tokio-postgres with
//! the `sslmode` it knows. How the server's certificate is checked is then
//! the connector's business ([`super::postgres_tls`]).

use std::path::PathBuf;

/// `sslmode`, libpq's five values (`allow` is refused: it means plaintext
/// first, which no deployment of devicelink should want).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plaintext only.
    Disable,
    /// TLS when the server offers it, else plaintext; nothing verified.
    Prefer,
    /// TLS, the certificate not verified (unless `sslrootcert` is given:
    /// then as [`SslMode::VerifyCa`], as libpq does).
    Require,
    /// TLS, the certificate chained to a trusted root; any host name.
    VerifyCa,
    /// TLS, the certificate chained to a trusted root and issued for the
    /// host connected to.
    VerifyFull,
}

impl SslMode {
    /// The accepted spellings, as an error message lists them.
    const NAMES: &'static str = "disable, prefer, require, verify-ca, verify-full";

    fn parse(text: &str) -> Result<Self, PostgresUrlError> {
        match text {
            "disable" => Ok(Self::Disable),
            "prefer" => Ok(Self::Prefer),
            "require" => Ok(Self::Require),
            "verify-ca" => Ok(Self::VerifyCa),
            "verify-full" => Ok(Self::VerifyFull),
            other => Err(PostgresUrlError::UnknownSslMode(other.to_owned())),
        }
    }

    /// What tokio-postgres is told: whether to ask for TLS, and whether
    /// plaintext is acceptable. Verification is the connector's.
    fn negotiation(self) -> tokio_postgres::config::SslMode {
        match self {
            Self::Disable => tokio_postgres::config::SslMode::Disable,
            Self::Prefer => tokio_postgres::config::SslMode::Prefer,
            Self::Require | Self::VerifyCa | Self::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }
}

/// How much of the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// Nothing: the connection is encrypted, not authenticated.
    None,
    /// The chain up to a trusted root, not the host name.
    Chain,
    /// The chain and the host name.
    ChainAndHostName,
}

/// A connection string taken apart: what tokio-postgres parses, and the
/// TLS settings it does not.
#[derive(Debug, Clone)]
pub struct PostgresUrl {
    /// Everything but the TLS settings, with the `sslmode` tokio-postgres
    /// knows.
    pub config: tokio_postgres::Config,
    /// `sslmode`; `prefer` when unset, as libpq.
    pub ssl_mode: SslMode,
    /// `sslrootcert`: a PEM file of CA certificates trusted beside the
    /// system's roots.
    pub root_cert: Option<PathBuf>,
}

impl PostgresUrl {
    /// Parses a connection string in URL or key=value form. Reads no file.
    pub fn parse(text: &str) -> Result<Self, PostgresUrlError> {
        let split = if is_url(text) {
            split_url(text)
        } else {
            split_key_values(text)
        };
        let ssl_mode = match split.ssl_mode {
            Some(mode) => SslMode::parse(&mode)?,
            None => SslMode::Prefer,
        };
        let mut config: tokio_postgres::Config =
            split.rest.parse().map_err(PostgresUrlError::Unparsable)?;
        config.ssl_mode(ssl_mode.negotiation());
        Ok(Self {
            config,
            ssl_mode,
            root_cert: split.root_cert.map(PathBuf::from),
        })
    }

    /// How much of the certificate the connector checks.
    pub fn verification(&self) -> Verification {
        match self.ssl_mode {
            SslMode::Disable | SslMode::Prefer => Verification::None,
            SslMode::Require if self.root_cert.is_none() => Verification::None,
            SslMode::Require | SslMode::VerifyCa => Verification::Chain,
            SslMode::VerifyFull => Verification::ChainAndHostName,
        }
    }
}

/// Why a connection string cannot be used. Never quotes the string: it
/// holds a password.
#[derive(Debug, thiserror::Error)]
pub enum PostgresUrlError {
    /// `sslmode` is none of libpq's values.
    #[error("sslmode {0:?} is not one of {names}", names = SslMode::NAMES)]
    UnknownSslMode(String),
    /// tokio-postgres refused the rest.
    #[error("is not a Postgres connection URL")]
    Unparsable(#[source] tokio_postgres::Error),
}

/// The connection string without its TLS settings, and those settings.
#[derive(Debug, Default, PartialEq, Eq)]
struct Split {
    rest: String,
    ssl_mode: Option<String>,
    root_cert: Option<String>,
}

fn is_url(text: &str) -> bool {
    text.starts_with("postgres://") || text.starts_with("postgresql://")
}

/// `postgres://...?a=b&sslmode=...`: the query's TLS parameters taken out
/// (the last of each wins, as libpq), percent-decoded.
fn split_url(url: &str) -> Split {
    let Some((base, query)) = url.split_once('?') else {
        return Split {
            rest: url.to_owned(),
            ..Split::default()
        };
    };
    let mut split = Split::default();
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match percent_decode(key).as_str() {
            "sslmode" => split.ssl_mode = Some(percent_decode(value)),
            "sslrootcert" => split.root_cert = Some(percent_decode(value)),
            _ => kept.push(pair),
        }
    }
    split.rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    split
}

/// `%XX` escapes decoded; a malformed escape is kept as written (the rest
/// of the URL is tokio-postgres's to judge).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = (bytes[index] == b'%')
            .then(|| text.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                index += 3;
            }
            None => {
                decoded.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// `host=db sslmode='verify-full' ...`: the TLS pairs taken out, every
/// other pair kept as written (quotes and escapes included).
fn split_key_values(text: &str) -> Split {
    let mut split = Split::default();
    let mut kept = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let (pair, key, value, after) = next_pair(rest);
        match key.as_str() {
            "sslmode" => split.ssl_mode = Some(value),
            "sslrootcert" => split.root_cert = Some(value),
            _ => kept.push(pair),
        }
        rest = after.trim_start();
    }
    split.rest = kept.join(" ");
    split
}

/// The first `key=value` pair of `text` (which starts with its key): the
/// pair as written, its key, its unquoted value, and what follows it.
fn next_pair(text: &str) -> (&str, String, String, &str) {
    let equals = text.find('=').unwrap_or(text.len());
    let key = text[..equals].trim().to_owned();
    let after_equals = text.get(equals + 1..).unwrap_or("");
    let value_start = text.len() - after_equals.trim_start().len();
    let mut value = String::new();
    let mut chars = text[value_start..].char_indices().peekable();
    let quoted = text[value_start..].starts_with('\'');
    if quoted {
        chars.next();
    }
    let mut end = text.len();
    while let Some((offset, character)) = chars.next() {
        match character {
            '\\' => {
                if let Some((_, escaped)) = chars.next() {
                    value.push(escaped);
                }
            }
            '\'' if quoted => {
                end = value_start + offset + 1;
                break;
            }
            whitespace if !quoted && whitespace.is_whitespace() => {
                end = value_start + offset;
                break;
            }
            other => value.push(other),
        }
    }
    (&text[..end], key, value, &text[end..])
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "postgres://app:s3cret@db.internal:5432/devicelink";

    fn parsed(text: &str) -> PostgresUrl {
        PostgresUrl::parse(text).unwrap_or_else(|error| panic!("{text}: {error}"))
    }

    #[test]
    fn every_libpq_mode_parses_in_url_form_and_maps_to_what_tokio_postgres_knows() {
        use tokio_postgres::config::SslMode as Negotiation;
        let cases = [
            (
                "disable",
                SslMode::Disable,
                Negotiation::Disable,
                Verification::None,
            ),
            (
                "prefer",
                SslMode::Prefer,
                Negotiation::Prefer,
                Verification::None,
            ),
            (
                "require",
                SslMode::Require,
                Negotiation::Require,
                Verification::None,
            ),
            (
                "verify-ca",
                SslMode::VerifyCa,
                Negotiation::Require,
                Verification::Chain,
            ),
            (
                "verify-full",
                SslMode::VerifyFull,
                Negotiation::Require,
                Verification::ChainAndHostName,
            ),
        ];
        for (text, mode, negotiation, verification) in cases {
            let url = parsed(&format!("{URL}?sslmode={text}&application_name=x"));
            assert_eq!(url.ssl_mode, mode, "{text}");
            assert_eq!(url.config.get_ssl_mode(), negotiation, "{text}");
            assert_eq!(url.verification(), verification, "{text}");
            assert_eq!(url.root_cert, None);
            assert_eq!(url.config.get_application_name(), Some("x"), "{text}");
            assert_eq!(url.config.get_dbname(), Some("devicelink"));
            assert_eq!(url.config.get_password(), Some(&b"s3cret"[..]));
        }
    }

    #[test]
    fn without_sslmode_tls_is_preferred_as_libpq_does() {
        let url = parsed(URL);
        assert_eq!(url.ssl_mode, SslMode::Prefer);
        assert_eq!(url.verification(), Verification::None);
    }

    #[test]
    fn sslrootcert_is_taken_out_and_percent_decoded() {
        let url = parsed(&format!(
            "{URL}?sslrootcert=%2Fetc%2Fdevicelink%2Fpg%20ca.crt&sslmode=verify-full"
        ));
        assert_eq!(
            url.root_cert.as_deref(),
            Some(std::path::Path::new("/etc/devicelink/pg ca.crt"))
        );
        assert_eq!(url.ssl_mode, SslMode::VerifyFull);
    }

    #[test]
    fn require_with_a_root_certificate_verifies_the_chain_as_libpq_does() {
        let url = parsed(&format!("{URL}?sslmode=require&sslrootcert=/ca.crt"));
        assert_eq!(url.verification(), Verification::Chain);
    }

    #[test]
    fn the_key_value_form_is_read_too() {
        let url = parsed(
            "host=db.internal port=6432 user=app password='s3 \\'cret' \
             sslmode = verify-ca sslrootcert='/etc/ca dir/ca.crt' dbname=devicelink",
        );
        assert_eq!(url.ssl_mode, SslMode::VerifyCa);
        assert_eq!(
            url.root_cert.as_deref(),
            Some(std::path::Path::new("/etc/ca dir/ca.crt"))
        );
        assert_eq!(url.config.get_dbname(), Some("devicelink"));
        assert_eq!(url.config.get_ports(), &[6432]);
        assert_eq!(
            url.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
    }

    #[test]
    fn an_unknown_mode_is_refused_by_name_without_quoting_the_url() {
        for text in [
            format!("{URL}?sslmode=verify_full"),
            format!("{URL}?sslmode=allow"),
            "host=db password=s3cret sslmode=strict".to_owned(),
        ] {
            let error = PostgresUrl::parse(&text).expect_err("refused");
            assert!(
                matches!(error, PostgresUrlError::UnknownSslMode(_)),
                "{error}"
            );
            let message = error.to_string();
            assert!(message.starts_with("sslmode \""), "{message}");
            assert!(message.contains("verify-full"), "{message}");
            assert!(!message.contains("s3cret"), "{message}");
        }
    }

    #[test]
    fn what_tokio_postgres_refuses_is_refused() {
        let error = PostgresUrl::parse("not a url").expect_err("refused");
        assert!(matches!(error, PostgresUrlError::Unparsable(_)), "{error}");
    }
}

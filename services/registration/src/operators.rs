//! Named operators and their admin tokens.
//!
//! Every admin call is made by a named operator, so that the logs say who
//! did what and one operator's token can be rotated without touching the
//! others'. Tokens are known only by their SHA-256 hash: the tokens file
//! (`DEVICELINK_ADMIN_TOKENS_FILE`, mounted from a Kubernetes Secret) holds
//! one `name:sha256hex` a line, and `DEVICELINK_ADMIN_TOKEN` (the
//! quickstart's single token) adds an operator named [`QUICKSTART_OPERATOR`].
//!
//! Rotation without downtime: add the new token's line (the same name may
//! stand on several lines, one per token, while a token is rotated), let
//! every replica pick it up (the file is read again every [`RELOAD_INTERVAL`]; kubelet
//! updates a mounted Secret in place), move clients to it, then remove the
//! old line. A file that no longer parses is logged and ignored: the
//! operators read last stay in force rather than locking everyone out.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use devicelink_shared::secret::SecretHash;
use devicelink_shared::serving::DrainSignal;

/// The operator that `DEVICELINK_ADMIN_TOKEN` stands for.
pub const QUICKSTART_OPERATOR: &str = "admin";
/// How often the tokens file is read again.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(5);
/// The longest operator name: it is logged with every admin call.
const MAX_NAME_CHARS: usize = 64;
/// The most operators a file may name; past that it is not a list of
/// people and services but a mistake.
const MAX_OPERATORS: usize = 1000;

/// Who made an admin call, as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorName(Arc<str>);

impl OperatorName {
    /// The name, for logs and audit records.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for OperatorName {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// The operators allowed in, by the hash of their token. Equality compares
/// the lists as read (a reload that changed nothing is not logged); it is
/// never used to check a presented token, which [`Operators::authenticate`]
/// does in constant time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Operators {
    entries: Vec<(OperatorName, SecretHash)>,
}

impl Operators {
    /// Reads a tokens file's text: `name:sha256hex` a line; blank lines and
    /// lines starting with `#` are skipped. The error names the line, never
    /// its content.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut operators = Self::default();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let number = index + 1;
            let (name, hex) = line
                .split_once(':')
                .ok_or_else(|| format!("line {number}: expected `name:sha256hex`"))?;
            let hash = parse_hex_hash(hex.trim())
                .ok_or_else(|| format!("line {number}: the hash must be 64 hex digits"))?;
            operators
                .add(name.trim(), hash)
                .map_err(|problem| format!("line {number}: {problem}"))?;
        }
        Ok(operators)
    }

    /// Adds an operator known by the hash of its token. A name may come
    /// several times, once per token (an operator rotating theirs); a
    /// token may not, since it would not say who called.
    pub fn add(&mut self, name: &str, hash: SecretHash) -> Result<(), String> {
        let name_ok = !name.is_empty()
            && name.chars().count() <= MAX_NAME_CHARS
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
        if !name_ok {
            return Err(format!(
                "an operator name is 1 to {MAX_NAME_CHARS} of A-Z a-z 0-9 . _ - @"
            ));
        }
        if self.entries.iter().any(|(_, known)| known.matches(&hash)) {
            return Err(format!(
                "operator {name:?} has the token of another operator"
            ));
        }
        if self.entries.len() >= MAX_OPERATORS {
            return Err(format!("more than {MAX_OPERATORS} operators"));
        }
        self.entries.push((OperatorName(name.into()), hash));
        Ok(())
    }

    /// The operator whose token `presented` is. Every entry is compared, in
    /// constant time, so response times tell nothing of which hash came
    /// close or how many operators there are before the match.
    pub fn authenticate(&self, presented: &str) -> Option<OperatorName> {
        let hash = SecretHash::of(&[presented.trim().as_bytes()]);
        let mut found = None;
        for (name, known) in &self.entries {
            if known.matches(&hash) {
                found = Some(name.clone());
            }
        }
        found
    }

    /// How many operators there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no operator can get in.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// 64 hex digits as a hash.
fn parse_hex_hash(hex: &str) -> Option<SecretHash> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let bytes = (0..32)
        .map(|index| u8::from_str_radix(&hex[2 * index..2 * index + 2], 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    SecretHash::from_bytes(&bytes)
}

/// Where the operators come from, read once at start-up and then again
/// every [`RELOAD_INTERVAL`] for the file.
#[derive(Debug, Clone)]
pub struct OperatorSource {
    /// The quickstart's single token, as the hash it is kept as.
    pub quickstart_token: Option<SecretHash>,
    /// `DEVICELINK_ADMIN_TOKENS_FILE`.
    pub tokens_file: Option<PathBuf>,
}

impl OperatorSource {
    /// Reads every operator now.
    pub fn load(&self) -> Result<Operators, String> {
        let mut operators = match &self.tokens_file {
            Some(path) => Operators::parse(&read(path)?)?,
            None => Operators::default(),
        };
        if let Some(hash) = &self.quickstart_token {
            operators.add(QUICKSTART_OPERATOR, *hash)?;
        }
        if operators.is_empty() {
            return Err("no operator can sign in: the tokens file names none".into());
        }
        Ok(operators)
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))
}

/// The operators in force, shared by the admin guard and the task that
/// reloads them.
#[derive(Debug, Clone)]
pub struct OperatorRegistry(Arc<RwLock<Arc<Operators>>>);

impl OperatorRegistry {
    /// A registry holding `operators`.
    pub fn new(operators: Operators) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(operators))))
    }

    /// The operators in force now.
    pub fn current(&self) -> Arc<Operators> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn replace(&self, operators: Operators) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(operators);
    }

    /// Reads `source` again every [`RELOAD_INTERVAL`] until the service
    /// drains, when it names a tokens file.
    pub fn spawn_reload(&self, source: OperatorSource, mut drain: DrainSignal) {
        if source.tokens_file.is_none() {
            return;
        }
        let registry = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(RELOAD_INTERVAL) => {}
                    () = drain.requested() => return,
                }
                match source.load() {
                    Ok(operators) => {
                        if operators != *registry.current() {
                            tracing::info!(operators = operators.len(), "admin operators changed");
                            registry.replace(operators);
                        }
                    }
                    Err(problem) => tracing::error!(
                        problem,
                        "admin tokens file unusable; keeping the operators read before"
                    ),
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash_hex(token: &str) -> String {
        SecretHash::of(&[token.as_bytes()]).to_hex()
    }

    #[test]
    fn a_file_names_operators_by_their_tokens_hash() {
        let text = format!(
            "# on-call\nalice:{}\n\n  bob@ops : {}  \n",
            hash_hex("alice-token-0123456789"),
            hash_hex("bob-token-0123456789")
        );
        let operators = Operators::parse(&text).expect("a valid file");
        assert_eq!(operators.len(), 2);
        let alice = operators.authenticate("alice-token-0123456789");
        assert_eq!(alice.map(|name| name.to_string()), Some("alice".into()));
        let bob = operators.authenticate("bob-token-0123456789");
        assert_eq!(bob.map(|name| name.to_string()), Some("bob@ops".into()));
        assert_eq!(operators.authenticate("alice-token-012345678"), None);
        assert_eq!(operators.authenticate(""), None);
    }

    #[test]
    fn bad_lines_are_refused_by_number_without_their_content() {
        let good = hash_hex("t");
        for (text, expected) in [
            ("nocolon".to_owned(), "line 1: expected"),
            ("a:123".to_owned(), "line 1: the hash must be 64 hex digits"),
            (format!("a:{}", "zz".repeat(32)), "line 1: the hash"),
            (format!("\n:{good}"), "line 2: an operator name"),
            (format!("a b:{good}"), "line 1: an operator name"),
            (
                format!("a:{good}\nb:{good}"),
                "line 2: operator \"b\" has the token",
            ),
        ] {
            let problem = Operators::parse(&text).expect_err(&text);
            assert!(problem.starts_with(expected), "{problem}");
            assert!(!problem.contains(&good));
        }
    }

    #[test]
    fn an_operator_holds_two_tokens_while_rotating() {
        let text = format!(
            "alice:{}\nalice:{}\n",
            hash_hex("alice-old-token-0123456789"),
            hash_hex("alice-new-token-0123456789")
        );
        let operators = Operators::parse(&text).expect("two lines, one name");
        for token in ["alice-old-token-0123456789", "alice-new-token-0123456789"] {
            let name = operators.authenticate(token).map(|name| name.to_string());
            assert_eq!(name.as_deref(), Some("alice"));
        }
    }

    #[test]
    fn the_quickstart_token_is_an_operator_named_admin() {
        let source = OperatorSource {
            quickstart_token: Some(SecretHash::of(&[b"quickstart-token-0123456789"])),
            tokens_file: None,
        };
        let operators = source.load().expect("one operator");
        let name = operators.authenticate("quickstart-token-0123456789");
        assert_eq!(
            name.map(|name| name.to_string()),
            Some(QUICKSTART_OPERATOR.into())
        );
        let nobody = OperatorSource {
            quickstart_token: None,
            tokens_file: None,
        };
        assert!(nobody.load().is_err());
    }

    #[test]
    fn a_missing_file_names_the_path() {
        let source = OperatorSource {
            quickstart_token: None,
            tokens_file: Some("/nonexistent/devicelink-tokens".into()),
        };
        let problem = source.load().expect_err("no such file");
        assert!(
            problem.contains("/nonexistent/devicelink-tokens"),
            "{problem}"
        );
    }
}

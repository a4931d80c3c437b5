//! Reading the metrics a service serves in Prometheus text, linting them
//! with promtool, and reading the metric names the operator's kit
//! (`deploy/observability/`) queries.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The Prometheus text served on `addr`, over a plain HTTP/1.1 request.
pub async fn scrape(addr: SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("reach the metrics port");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read the response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// The value of the unlabelled counter `name` in `metrics`; 0 while it has
/// never been incremented (the exporter lists it only from then on).
pub fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map(|value| value.trim().parse().expect("a number"))
        .next()
        .unwrap_or(0.0)
}

/// The series lines (neither comments nor blank) of `metric` in `text`,
/// its `_bucket`, `_sum` and `_count` lines included.
pub fn series<'a>(text: &'a str, metric: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    text.lines().filter(move |line| {
        line.strip_prefix(metric)
            .is_some_and(|rest| rest.starts_with(['{', ' ', '_']))
    })
}

/// A free loopback port for a metrics listener.
pub fn free_metrics_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port for metrics")
}

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .to_owned()
}

/// A promtool, from `deploy/observability/install-promtool.sh` (which
/// honours `DEVICELINK_PROMTOOL_BIN` and installs one when none is found).
pub fn promtool() -> PathBuf {
    let script = repo_root().join("deploy/observability/install-promtool.sh");
    let output = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .expect("run install-promtool.sh");
    assert!(output.status.success(), "{} failed", script.display());
    PathBuf::from(String::from_utf8(output.stdout).expect("a path").trim())
}

/// What `promtool check metrics` says of `text` (empty when it finds
/// nothing to complain about), and whether it passed.
pub fn lint(promtool: &Path, text: &str) -> (bool, String) {
    use std::io::Write as _;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("promtool's stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let output = child.wait_with_output().expect("promtool ends");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), said.trim().to_owned())
}

/// The body of a scraped response (what follows the HTTP headers).
pub fn body(response: &str) -> &str {
    response
        .split_once("\r\n\r\n")
        .map_or(response, |(_, body)| body)
}

/// The names of the samples in `text` (a histogram's `_bucket`, `_sum` and
/// `_count` each).
pub fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// The devicelink metrics and recorded series a PromQL expression reads:
/// every name starting `devicelink_` or `devicelink:` outside a quoted
/// string (label values such as `devicelink.v1.AuthCodeService/...` are
/// quoted).
pub fn metric_names_in(promql: &str) -> BTreeSet<String> {
    let mut unquoted = String::new();
    let mut quote = None;
    let mut escaped = false;
    for character in promql.chars() {
        match quote {
            Some(open) => {
                if escaped {
                    escaped = false;
                } else if character == '\\' {
                    escaped = true;
                } else if character == open {
                    quote = None;
                }
                // A string separates whatever surrounds it.
                if quote.is_none() {
                    unquoted.push(' ');
                }
            }
            None if matches!(character, '"' | '\'' | '`') => quote = Some(character),
            None => unquoted.push(character),
        }
    }
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    unquoted
        .split(|c: char| !is_name_char(c))
        .filter(|word| word.starts_with("devicelink_") || word.starts_with("devicelink:"))
        .map(str::to_owned)
        .collect()
}

/// The `expr`s of a Prometheus rules file, as written in
/// `deploy/observability/devicelink.rules.yml`: `expr: <one line>` or
/// `expr: |` followed by lines indented deeper than the key. (The tests
/// crate has no YAML parser, and this file's format is ours.)
pub fn rule_exprs(rules_yaml: &str) -> Vec<String> {
    let mut exprs = Vec::new();
    let mut lines = rules_yaml.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        let Some(value) = trimmed.strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        if !value.starts_with('|') && !value.starts_with('>') {
            exprs.push(value.trim_matches(['"', '\'']).to_owned());
            continue;
        }
        let key_indent = line.len() - trimmed.len();
        let mut block = String::new();
        while let Some(next) = lines.peek() {
            let next_indent = next.len() - next.trim_start().len();
            if !next.trim().is_empty() && next_indent <= key_indent {
                break;
            }
            block.push_str(next.trim());
            block.push('\n');
            lines.next();
        }
        exprs.push(block);
    }
    exprs
}

/// The names the recording rules of a rules file record.
pub fn recorded_names(rules_yaml: &str) -> BTreeSet<String> {
    rules_yaml
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("- record:"))
        .map(|name| name.trim().to_owned())
        .collect()
}

/// Every query of a Grafana dashboard: each panel target's `expr` and each
/// template variable's query, wherever they nest.
pub fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<String> {
    let mut queries = Vec::new();
    collect_queries(dashboard, &mut queries);
    queries
}

fn collect_queries(value: &serde_json::Value, queries: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(object) => {
            for (key, value) in object {
                match (key.as_str(), value) {
                    ("expr" | "query" | "definition", serde_json::Value::String(query)) => {
                        queries.push(query.clone());
                    }
                    _ => collect_queries(value, queries),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                collect_queries(item, queries);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_are_read_outside_strings() {
        let names = metric_names_in(
            r#"sum by (method) (rate(devicelink_grpc_requests_total{method=~"devicelink.v1.X/Y",code!="Ok"}[5m]))
               / ignoring (state) devicelink:slo_errors:ratio_rate5m > 0.1 and devicelink_up"#,
        );
        let expected: BTreeSet<String> = [
            "devicelink_grpc_requests_total",
            "devicelink:slo_errors:ratio_rate5m",
            "devicelink_up",
        ]
        .map(str::to_owned)
        .into();
        assert_eq!(names, expected);
    }

    #[test]
    fn rule_exprs_are_read_inline_and_as_blocks() {
        let rules = "groups:\n  - name: g\n    rules:\n      - record: a:b\n        expr: |\n          sum(\n            devicelink_x_total\n          )\n        labels:\n          k: v\n      - alert: A\n        expr: devicelink_y == 0\n        for: 1m\n";
        let exprs = rule_exprs(rules);
        assert_eq!(exprs.len(), 2, "{exprs:?}");
        assert!(exprs[0].contains("devicelink_x_total") && !exprs[0].contains("labels"));
        assert_eq!(exprs[1], "devicelink_y == 0");
        assert_eq!(recorded_names(rules), BTreeSet::from(["a:b".to_owned()]));
    }

    #[test]
    fn sample_names_skip_comments() {
        let text = "# HELP a_total x\n# TYPE a_total counter\na_total 1\nb_bucket{le=\"1\"} 2\n";
        assert_eq!(
            sample_names(text),
            BTreeSet::from(["a_total".to_owned(), "b_bucket".to_owned()])
        );
    }

    #[test]
    fn counters_are_read_by_exact_name() {
        let text = "# TYPE a_total counter\na_total 3\na_total_more 5\n";
        assert_eq!(counter(text, "a_total"), 3.0);
        assert_eq!(counter(text, "b_total"), 0.0);
    }
}

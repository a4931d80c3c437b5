//! Reading the metrics a service serves in Prometheus text.

use std::net::SocketAddr;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_by_exact_name() {
        let text = "# TYPE a_total counter\na_total 3\na_total_more 5\n";
        assert_eq!(counter(text, "a_total"), 3.0);
        assert_eq!(counter(text, "b_total"), 0.0);
    }
}

//! Reading what a service exports on its Prometheus metrics port.

use std::net::SocketAddr;

/// The Prometheus text served on `addr`, over a plain HTTP/1.1 request.
pub async fn scrape(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

/// The series lines (neither comments nor blank) of `metric` in `text`.
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

//! HTTP/2 cannot be turned against a replica: one connection gets at most
//! 100 streams at once, a client that makes the server reset streams past
//! the cap (MadeYouReset) or opens and resets streams in a loop (Rapid
//! Reset) is sent GOAWAY, and the service stays healthy. A raw frame writer
//! and the `h2` client play the hostile peers.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use devicelink_e2e::raw_h2::{RawH2, ServerFrame, reason};
use devicelink_e2e::*;
use devicelink_shared::hardening::{MAX_CONCURRENT_STREAMS, MAX_LOCAL_ERROR_RESETS};
use h2::client::SendRequest;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// An HTTP/2 connection with prior knowledge, as gRPC clients open them,
/// and the task driving it (it ends when the connection does).
async fn h2_connection(
    addr: SocketAddr,
) -> (SendRequest<Bytes>, JoinHandle<Result<(), h2::Error>>) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (client, connection) = h2::client::Builder::new()
        // Ask for as many streams as a hostile client would.
        .initial_max_send_streams(1000)
        .handshake(tcp)
        .await
        .expect("HTTP/2 handshake");
    (client, tokio::spawn(connection))
}

/// The head of a MintAuthCode call whose body never comes.
fn mint_head(addr: SocketAddr) -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri(format!(
            "http://{addr}/devicelink.v1.AuthCodeService/MintAuthCode"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("a request head")
}

/// Opens `count` streams on one raw connection as fast as it can, each
/// the head of a MintAuthCode call whose body never comes (so each stays
/// open), and gathers what the server answers until it has been quiet for
/// a moment: the streams it refused, and its GOAWAY code if it sent one.
async fn open_streams_ignoring_the_limit(addr: SocketAddr, count: u32) -> (Vec<u32>, Option<u32>) {
    let mut connection = RawH2::connect(addr).await;
    for index in 0..count {
        connection
            .headers(
                1 + 2 * index,
                "/devicelink.v1.AuthCodeService/MintAuthCode",
                false,
            )
            .await;
    }
    let mut refused = Vec::new();
    let mut goaway = None;
    while let Ok(Some(frame)) =
        tokio::time::timeout(Duration::from_millis(500), connection.frames.recv()).await
    {
        match frame {
            ServerFrame::Reset { stream_id, code } if code == reason::REFUSED_STREAM => {
                refused.push(stream_id);
            }
            ServerFrame::GoAway { code } => goaway = Some(code),
            _ => {}
        }
    }
    (refused, goaway)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_gets_at_most_100_streams_at_once() {
    let env = TestEnv::start().await;
    // A well-behaved client is told the limit...
    let (client, _connection) = h2_connection(env.authcode_addr).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while client.current_max_send_streams() != MAX_CONCURRENT_STREAMS as usize {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server advertises no limit of {MAX_CONCURRENT_STREAMS} streams (still {})",
            client.current_max_send_streams()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // ...and a client that ignores it has every stream past it refused.
    let (refused, goaway) = open_streams_ignoring_the_limit(env.authcode_addr, 1000).await;
    let limit = MAX_CONCURRENT_STREAMS;
    let expected: Vec<u32> = (limit..1000).map(|index| 1 + 2 * index).collect();
    assert_eq!(
        refused, expected,
        "the streams past the first {limit} are refused"
    );
    assert_eq!(goaway, None, "900 refusals stay under the reset cap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_forcing_resets_gets_goaway_and_the_service_stays_healthy() {
    let env = TestEnv::start().await;
    // Every refused stream is a reset the server makes because of the
    // client (MadeYouReset): past the cap, the connection is ended.
    let (refused, goaway) = open_streams_ignoring_the_limit(env.authcode_addr, 3000).await;
    assert_eq!(
        goaway,
        Some(reason::ENHANCE_YOUR_CALM),
        "after {} refusals",
        refused.len()
    );
    assert_eq!(
        refused.len(),
        MAX_LOCAL_ERROR_RESETS,
        "refusals before GOAWAY"
    );

    let (_, api_key) = env.app_with_key().await;
    let code = env.mint(&api_key, "after-the-resets").await;
    assert!(!code.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_gets_goaway_and_the_service_stays_healthy() {
    let env = TestEnv::start().await;
    let (mut client, connection) = h2_connection(env.authcode_addr).await;
    let mut sent = 0;
    for _ in 0..10_000 {
        let Ok(ready) = client.clone().ready().await else {
            break;
        };
        client = ready;
        let Ok((_, mut stream)) = client.send_request(mint_head(env.authcode_addr), false) else {
            break;
        };
        stream.send_reset(h2::Reason::CANCEL);
        sent += 1;
    }
    let ended = tokio::time::timeout(Duration::from_secs(10), connection)
        .await
        .expect("the server closes the connection")
        .expect("the connection task joins");
    // The server sends GOAWAY (ENHANCE_YOUR_CALM) and closes; the client
    // sees the GOAWAY or, while still writing, the closed socket.
    let error = ended.expect_err("the connection ends in an error");
    let closed_by_server = error.is_go_away()
        || error.get_io().is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            )
        });
    assert!(closed_by_server, "{error:?} after {sent} resets");
    if let Some(reason) = error.reason() {
        assert_eq!(reason, h2::Reason::ENHANCE_YOUR_CALM, "{error:?}");
    }
    assert!(sent < 10_000, "the server let all {sent} resets through");

    // Other clients are served as before.
    let (_, api_key) = env.app_with_key().await;
    let code = env.mint(&api_key, "after-the-flood").await;
    assert!(!code.is_empty());
}

//! The limits every listener sets, so that no caller holds more of a
//! replica than its share and none can exhaust it with HTTP/2 tricks.
//!
//! tonic 0.14 hands hyper `None` for the streams a connection may open at
//! once (overriding hyper's default of 200) and for h2's cap on streams the
//! server resets because of a peer's errors (switching off h2's default of
//! 1024): left as they are, one connection may open streams without limit,
//! and a HEADERS + RST_STREAM loop (Rapid Reset, MadeYouReset) costs the
//! server work for free. [`harden`] sets both, keepalive pings that find
//! dead peers, a connection age after which clients move on (so they spread
//! over new replicas), and a deadline for every call. [`ShedLayer`] bounds
//! the calls one replica works on at once and refuses the rest at once
//! with UNAVAILABLE (another replica may have room) rather than queueing
//! them without bound.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::rpc::{BoxFuture, take_polled};

/// The most streams a client may have open on one connection.
pub const MAX_CONCURRENT_STREAMS: u32 = 100;
/// How many streams the server may reset for a peer's protocol errors
/// before it sends GOAWAY; h2's own default, which tonic switches off.
pub const MAX_LOCAL_ERROR_RESETS: usize = 1024;
/// How many streams a peer may reset before the server accepted them
/// (HEADERS then RST_STREAM) before GOAWAY; h2's default.
pub const MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// How often an idle connection is pinged, and how long the answer may
/// take: a peer that vanished (a NAT dropped its state, a pod died) is found
/// and its connection closed, instead of held for good.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// See [`KEEPALIVE_INTERVAL`].
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// After this long a connection is asked to go away (GOAWAY), so that
/// long-lived clients spread over replicas added since they connected.
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(30 * 60);
/// How long calls and streams of a connection past its age may go on.
pub const MAX_CONNECTION_AGE_GRACE: Duration = Duration::from_secs(60);
/// The longest any call may take to answer (a watch stream's answer is its
/// first message; the stream itself lives on). Store calls are bounded far
/// below this: it catches what nothing else bounds.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The most calls one replica works on at once before it sheds load.
pub const MAX_CALLS_IN_FLIGHT: usize = 2048;
/// The largest request a public method takes: every field of every public
/// request is bounded far below this.
pub const MAX_PUBLIC_REQUEST_BYTES: usize = 16 * 1024;
/// The largest admin request: an SDK configuration is at most 64 KiB as
/// JSON, a little more as a protobuf `Struct`.
pub const MAX_ADMIN_REQUEST_BYTES: usize = 256 * 1024;

/// `builder` with the connection and HTTP/2 limits above.
pub fn harden(builder: tonic::transport::Server) -> tonic::transport::Server {
    builder
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_ACCEPT_RESETS))
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .max_connection_age(MAX_CONNECTION_AGE)
        .max_connection_age_grace(MAX_CONNECTION_AGE_GRACE)
        .timeout(CALL_TIMEOUT)
}

/// Refuses calls past [`MAX_CALLS_IN_FLIGHT`] (or another bound) at once,
/// with UNAVAILABLE. Shared by every connection of a listener.
#[derive(Debug, Clone)]
pub struct ShedLayer {
    permits: Arc<Semaphore>,
}

impl ShedLayer {
    /// At most `max_in_flight` calls at once.
    pub fn new(max_in_flight: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_in_flight)),
        }
    }
}

impl Default for ShedLayer {
    fn default() -> Self {
        Self::new(MAX_CALLS_IN_FLIGHT)
    }
}

impl<S> tower::Layer<S> for ShedLayer {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Shed {
            inner,
            permits: self.permits.clone(),
        }
    }
}

/// The service [`ShedLayer`] wraps around another.
#[derive(Debug, Clone)]
pub struct Shed<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

impl<S, B, ResponseBody> tower::Service<http::Request<B>> for Shed<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<ResponseBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    ResponseBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            metrics::counter!(crate::metrics_catalog::CALLS_SHED).increment(1);
            let status = tonic::Status::unavailable(
                "this replica is at capacity; retry the call, another replica may have room",
            );
            return Box::pin(std::future::ready(Ok(status.into_http())));
        };
        let mut inner = take_polled(&mut self.inner);
        Box::pin(async move {
            let response = inner.call(request).await;
            drop(permit);
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, Service, ServiceExt};

    /// A service that answers once `release` is notified, counting the
    /// calls that reached it.
    #[derive(Clone, Default)]
    struct Held {
        release: Arc<tokio::sync::Notify>,
        entered: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Held {
        async fn wait_for_calls(&self, count: usize) {
            while self.entered.load(std::sync::atomic::Ordering::SeqCst) < count {
                tokio::task::yield_now().await;
            }
        }
    }

    impl Service<http::Request<()>> for Held {
        type Response = http::Response<String>;
        type Error = std::convert::Infallible;
        type Future = BoxFuture<Result<Self::Response, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            let held = self.clone();
            Box::pin(async move {
                let released = held.release.notified();
                held.entered
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                released.await;
                Ok(http::Response::new("answered".to_owned()))
            })
        }
    }

    fn status_of(response: &http::Response<String>) -> Option<tonic::Status> {
        tonic::Status::from_header_map(response.headers())
    }

    #[tokio::test]
    async fn calls_past_the_bound_are_refused_at_once_and_admitted_again_later() {
        let held = Held::default();
        let service = ShedLayer::new(2).layer(held.clone());
        let first = tokio::spawn(service.clone().oneshot(http::Request::new(())));
        let second = tokio::spawn(service.clone().oneshot(http::Request::new(())));
        held.wait_for_calls(2).await;
        let refused = service
            .clone()
            .oneshot(http::Request::new(()))
            .await
            .expect("an answer");
        let status = status_of(&refused).expect("a gRPC status");
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(
            status.message().contains("at capacity"),
            "{}",
            status.message()
        );
        assert_eq!(held.entered.load(std::sync::atomic::Ordering::SeqCst), 2);

        held.release.notify_waiters();
        for call in [first, second] {
            let answered = call.await.expect("joined").expect("an answer");
            assert_eq!(answered.body(), "answered");
        }
        let admitted = tokio::spawn(service.oneshot(http::Request::new(())));
        held.wait_for_calls(3).await;
        held.release.notify_waiters();
        let answered = admitted.await.expect("joined").expect("an answer");
        assert_eq!(answered.body(), "answered");
        assert!(status_of(&answered).is_none());
    }
}

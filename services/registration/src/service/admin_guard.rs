//! The operator guard in front of `AdminService`.
//!
//! [`AdminGuard`] wraps the generated `AdminServiceServer`, so it sees
//! every `/devicelink.v1.AdminService/*` call and nothing else. For each
//! call it:
//!
//! 1. works out the client address ([`TrustedProxies::client_address`]) and
//!    refuses it with RESOURCE_EXHAUSTED, before looking at the token, when
//!    its failed attempts ([`LimitKey::failed_auth_per_address`]) are over
//!    the limit: guessing tokens costs the guesser, not the operators;
//! 2. authenticates the bearer token against the operators in force
//!    ([`OperatorRegistry::current`]); a missing or wrong token is
//!    UNAUTHENTICATED, logged (method and address, never the token) and
//!    counted against the address;
//! 3. puts the [`OperatorName`] into the request's extensions, where the
//!    handlers find it ([`super::admin::operator`]), and logs the call with
//!    its operator, method and outcome.
//!
//! It is a tower service rather than a tonic interceptor because the limit
//! is decided in Redis, which an interceptor (synchronous) cannot wait for.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;

use devicelink_shared::limits::{
    Decision, Limit, LimitKey, Rate, RateLimiter, TrustedProxies, rate_limited,
};
use devicelink_shared::rpc::{UNKNOWN_METHOD, known_method};
use devicelink_shared::status::bearer_token;
use devicelink_shared::stores::RedisConnection;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Context, Poll, Service, http};
use tonic::metadata::MetadataMap;
use tonic::server::NamedService;
use tonic::transport::server::TcpConnectInfo;
use tonic::{Code, Status};

use crate::operators::{OperatorName, OperatorRegistry};

/// What the guard decides with, shared by every clone.
#[derive(Debug)]
pub struct GuardSettings {
    /// The operators in force, reloaded in the background.
    pub operators: OperatorRegistry,
    /// Where failed attempts are counted.
    pub limiter: RateLimiter<RedisConnection>,
    /// Failed attempts allowed per client address (`None`: unlimited).
    pub failed_auth_per_address: Option<Rate>,
    /// Proxies whose `x-forwarded-for` names the client.
    pub trusted_proxies: TrustedProxies,
}

/// `AdminService` behind the operator guard; see the module doc.
#[derive(Debug, Clone)]
pub struct AdminGuard<S> {
    inner: S,
    settings: Arc<GuardSettings>,
}

impl<S> AdminGuard<S> {
    /// `inner` (the generated `AdminServiceServer`) behind the guard.
    pub fn new(inner: S, settings: GuardSettings) -> Self {
        Self {
            inner,
            settings: Arc::new(settings),
        }
    }
}

impl<S: NamedService> NamedService for AdminGuard<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for AdminGuard<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // The service polled ready is the one to call; a fresh clone takes
        // its place for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let settings = self.settings.clone();
        Box::pin(async move {
            let method = known_method(request.uri().path()).unwrap_or(UNKNOWN_METHOD);
            let metadata = MetadataMap::from_headers(request.headers().clone());
            let peer = request
                .extensions()
                .get::<TcpConnectInfo>()
                .and_then(TcpConnectInfo::remote_addr)
                .map(|addr| addr.ip());
            let client = settings.trusted_proxies.client_address(peer, &metadata);
            let failures = client.and_then(|address| {
                Limit::new(
                    LimitKey::failed_auth_per_address(address),
                    settings.failed_auth_per_address,
                )
            });
            let failures = failures.as_slice();
            if let Decision::Limited(refusal) = settings.limiter.peek(failures).await {
                tracing::warn!(
                    method,
                    client = %display_address(client),
                    "admin call refused: too many failed admin tokens from this address"
                );
                return Ok(rate_limited(&refusal).into_http());
            }
            let presented = bearer_token(&metadata);
            let operator =
                presented.and_then(|token| settings.operators.current().authenticate(token));
            let Some(operator) = operator else {
                let reason = if presented.is_some() {
                    "wrong admin token"
                } else {
                    "missing admin token"
                };
                tracing::warn!(method, client = %display_address(client), reason, "admin call refused");
                settings.limiter.record(failures).await;
                return Ok(unauthenticated(presented.is_some()).into_http());
            };
            request
                .extensions_mut()
                .insert::<OperatorName>(operator.clone());
            let response = inner.call(request).await?;
            let code = outcome(response.headers());
            tracing::info!(%operator, method, code = ?code, "admin call");
            Ok(response)
        })
    }
}

/// UNAUTHENTICATED, saying what to send; the same for every wrong token.
fn unauthenticated(token_sent: bool) -> Status {
    if token_sent {
        Status::unauthenticated("admin token is wrong")
    } else {
        Status::unauthenticated("missing admin token: send `authorization: Bearer <admin token>`")
    }
}

/// The address as logged: `unknown` when there is no peer (in-process).
fn display_address(address: Option<IpAddr>) -> String {
    address.map_or_else(|| "unknown".to_owned(), |address| address.to_string())
}

/// The call's outcome as its response headers tell it: an error is sent
/// "trailers-only", with `grpc-status` in the headers; headers without it
/// start a successful answer.
fn outcome(headers: &http::HeaderMap) -> Code {
    headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse::<i32>().ok())
        .map_or(Code::Ok, Code::from_i32)
}

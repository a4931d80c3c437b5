//! The REST gateway under test: Envoy, and an HTTP/1.1 client to call it.

mod envoy;
mod http;
pub mod schemathesis;

pub use envoy::Gateway;
pub use http::{Response, assert_error, create_user_body, http, http_raw, parse_response};

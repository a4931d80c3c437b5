//! The gRPC edge: requests are parsed into domain types here, and results
//! turned back into protobuf messages.

pub mod admin;
pub mod admin_guard;
mod admin_messages;
pub mod audit_events;
pub mod convert;
pub mod limits;
pub mod parse;
pub mod registration;
pub mod sdk_config;
pub mod watch;

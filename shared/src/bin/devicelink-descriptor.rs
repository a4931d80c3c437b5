//! Writes the compiled descriptor set of the devicelink contracts, with
//! their `google.api.http` options and `google.rpc.Status`, for Envoy's
//! gRPC-JSON transcoder (`proto_descriptor` in deploy/envoy/envoy.yaml).
//!
//!     devicelink-descriptor PATH     # `-` writes to standard output

use std::io::Write;
use std::process::ExitCode;

use devicelink_shared::pb::FILE_DESCRIPTOR_SET;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(path), None) = (args.next(), args.next()) else {
        eprintln!("usage: devicelink-descriptor PATH   (- for standard output)");
        return ExitCode::from(64);
    };
    let written = if path == "-" {
        std::io::stdout().lock().write_all(FILE_DESCRIPTOR_SET)
    } else {
        std::fs::write(&path, FILE_DESCRIPTOR_SET)
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!(
                "devicelink-descriptor: cannot write {}: {error}",
                path.to_string_lossy()
            );
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Envoy's transcoder needs from the descriptor set.
    #[test]
    fn the_descriptor_set_serves_the_gateway() {
        let pool = prost_reflect::DescriptorPool::decode(FILE_DESCRIPTOR_SET)
            .expect("the descriptor set decodes");
        for service in [
            "devicelink.v1.AuthCodeService",
            "devicelink.v1.RegistrationService",
            "devicelink.v1.AdminService",
        ] {
            assert!(pool.get_service_by_name(service).is_some(), "{service}");
        }
        // JSON error bodies: the status and the detail the services attach.
        for message in ["google.rpc.Status", "google.rpc.BadRequest"] {
            assert!(pool.get_message_by_name(message).is_some(), "{message}");
        }
        // The http options survived encoding.
        let http = pool
            .get_extension_by_name("google.api.http")
            .expect("google.api.http");
        let create_user = pool
            .get_service_by_name("devicelink.v1.RegistrationService")
            .and_then(|service| service.methods().find(|m| m.name() == "CreateUser"))
            .expect("CreateUser");
        let options = create_user.options();
        let rule = options.get_extension(&http);
        let post = rule
            .as_message()
            .and_then(|rule| rule.get_field_by_name("post"))
            .and_then(|post| post.as_str().map(str::to_owned));
        assert_eq!(post.as_deref(), Some("/v1/users"));
    }
}

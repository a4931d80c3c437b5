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

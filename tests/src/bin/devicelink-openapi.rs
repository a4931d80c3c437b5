//! Writes the OpenAPI document of devicelink's REST API.
//!
//!     devicelink-openapi [PATH]      # standard output without PATH

use std::process::ExitCode;

use devicelink_e2e::openapi::generate;
use devicelink_shared::pb::FILE_DESCRIPTOR_SET;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (path, None) = (args.next(), args.next()) else {
        eprintln!("usage: devicelink-openapi [PATH]");
        return ExitCode::from(64);
    };
    let document = match generate(FILE_DESCRIPTOR_SET) {
        Ok(document) => document,
        Err(error) => {
            eprintln!("devicelink-openapi: {error}");
            return ExitCode::FAILURE;
        }
    };
    match path {
        None => {
            print!("{document}");
            ExitCode::SUCCESS
        }
        Some(path) => match std::fs::write(&path, document) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!(
                    "devicelink-openapi: cannot write {}: {error}",
                    path.to_string_lossy()
                );
                ExitCode::FAILURE
            }
        },
    }
}

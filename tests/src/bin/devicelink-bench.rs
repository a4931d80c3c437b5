//! `devicelink-bench`: measures the services beside their floors (see
//! [`devicelink_e2e::bench`] and `tests/bench/run.sh`).

use std::process::ExitCode;

use devicelink_e2e::bench::cli::{self, Command, USAGE};
use devicelink_e2e::bench::{floor_server, run, soak};

/// The exit code of a bad command line (`EX_USAGE`).
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let command = match cli::parse(std::env::args().skip(1)) {
        Ok(command) => command,
        Err(error) => {
            eprintln!("devicelink-bench: {error}\n\n{USAGE}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match command {
        Command::Help => {
            print!("{USAGE}\n{}", soak::USAGE);
            ExitCode::SUCCESS
        }
        // A floor stands in for a service, so it gets a service's runtime:
        // the default builder reads TOKIO_WORKER_THREADS as
        // `#[tokio::main]` does.
        Command::ServeFloor { kind, listen } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build();
            match runtime.map(|runtime| runtime.block_on(floor_server::serve(kind, listen))) {
                Ok(Ok(())) => ExitCode::SUCCESS,
                Ok(Err(error)) => {
                    eprintln!("devicelink-bench floor: {error}");
                    ExitCode::FAILURE
                }
                Err(error) => {
                    eprintln!("devicelink-bench floor: no runtime: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        // The soak's load is light; its client gets the default runtime.
        Command::Soak(options) => match tokio::runtime::Runtime::new() {
            Ok(runtime) => runtime.block_on(soak::main(options)),
            Err(error) => {
                eprintln!("devicelink-bench: no runtime: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Bench(options) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(options.client_threads)
                .enable_all()
                .build();
            match runtime {
                Ok(runtime) => runtime.block_on(run::main(options)),
                Err(error) => {
                    eprintln!("devicelink-bench: no runtime: {error}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

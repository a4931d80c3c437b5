//! Compiles `proto/` with protox (pure Rust, so a fresh machine needs no
//! `protoc`) and writes the descriptor set that reflection and the REST
//! gateway read.
//!
//! `google/rpc/status.proto` and `google/rpc/error_details.proto` are
//! compiled too, though no devicelink message uses them: Envoy's gRPC-JSON
//! transcoder needs `google.rpc.Status` in its descriptor to turn a gRPC
//! error into a JSON body (`convert_grpc_status`), and the types of the
//! details the services attach (`google.rpc.BadRequest`) to print them; a
//! detail of a type it does not know makes it give up the JSON body. Their
//! generated code goes unused.

use std::path::PathBuf;

const PROTO_ROOT: &str = "../proto";
const PROTO_FILES: &[&str] = &[
    "devicelink/v1/install.proto",
    "devicelink/v1/authcode.proto",
    "devicelink/v1/registration.proto",
    "devicelink/v1/admin.proto",
    "google/rpc/status.proto",
    "google/rpc/error_details.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut compiler = protox::Compiler::new([PROTO_ROOT])?;
    compiler.include_source_info(true).include_imports(true);
    compiler.open_files(PROTO_FILES)?;

    // Encoded by protox itself: prost would drop the `google.api.http`
    // extension options that reflection clients and the gateway need.
    std::fs::write(
        out_dir.join("devicelink_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}

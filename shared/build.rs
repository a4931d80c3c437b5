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
//!
//! It also writes the fields' declared bounds as Rust constants
//! (build_field_rules.rs), which `crate::contract` includes: the services
//! validate against them, and the OpenAPI generator reads the same ones.
//!
//! It also records the git commit being built, for the
//! `devicelink_build_info` metric (see [`build_commit`]).

use std::path::PathBuf;

#[path = "build_field_rules.rs"]
mod field_rules;

const PROTO_ROOT: &str = "../proto";
const PROTO_FILES: &[&str] = &[
    "devicelink/v1/field_rules.proto",
    "devicelink/v1/install.proto",
    "devicelink/v1/authcode.proto",
    "devicelink/v1/registration.proto",
    "devicelink/v1/audit.proto",
    "devicelink/v1/admin.proto",
    "google/rpc/status.proto",
    "google/rpc/error_details.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    println!("cargo:rustc-env=DEVICELINK_BUILD_COMMIT={}", build_commit());
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut compiler = protox::Compiler::new([PROTO_ROOT])?;
    compiler.include_source_info(true).include_imports(true);
    compiler.open_files(PROTO_FILES)?;

    // Encoded by protox itself: prost would drop the `google.api.http`
    // extension options that reflection clients and the gateway need.
    let descriptor_set = compiler.encode_file_descriptor_set();
    std::fs::write(out_dir.join("devicelink_descriptor.bin"), &descriptor_set)?;
    // The fields' declared bounds, for `crate::contract`.
    std::fs::write(
        out_dir.join("field_rules.rs"),
        field_rules::generate(&descriptor_set)?,
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}

/// The commit being built: `DEVICELINK_GIT_COMMIT` when set (an image
/// build, whose context has no `.git`), else what git says of the checkout,
/// else `unknown`. Never a build failure: a source tarball builds too.
/// Cargo is told to run this again when the checkout moves to another
/// commit (its `HEAD` and the branch `HEAD` names), and only then; a path
/// that does not exist is not named, or cargo would run this every build.
fn build_commit() -> String {
    println!("cargo:rerun-if-env-changed=DEVICELINK_GIT_COMMIT");
    if let Ok(commit) = std::env::var("DEVICELINK_GIT_COMMIT")
        && !commit.trim().is_empty()
    {
        return commit.trim().to_owned();
    }
    let git = |args: &[&str]| -> Option<String> {
        let output = std::process::Command::new("git").args(args).output().ok()?;
        let text = String::from_utf8(output.stdout).ok()?;
        (output.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
    };
    let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".to_owned();
    };
    // A worktree keeps HEAD in its own git dir and the branches in the
    // common one.
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={git_dir}/HEAD");
    }
    if let (Some(common_dir), Some(branch)) = (
        git(&["rev-parse", "--path-format=absolute", "--git-common-dir"]),
        git(&["symbolic-ref", "-q", "HEAD"]),
    ) {
        let branch_ref = format!("{common_dir}/{branch}");
        if std::path::Path::new(&branch_ref).exists() {
            println!("cargo:rerun-if-changed={branch_ref}");
        }
        let packed = format!("{common_dir}/packed-refs");
        if std::path::Path::new(&packed).exists() {
            println!("cargo:rerun-if-changed={packed}");
        }
    }
    commit
}

//! Generates the Curve and brpc protobuf types from `proto/*.proto` at build time.
//!
//! protox parses the files in pure Rust, so a fresh machine needs no `protoc`; prost-build then
//! writes one Rust module per protobuf package into OUT_DIR, which `src/curve/proto.rs` includes.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/baidu_rpc_meta.proto",
        "proto/common.proto",
        "proto/nameserver2.proto",
        "proto/topology.proto",
        "proto/chunk.proto",
        "proto/cli2.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    // The include root is the repository, so `import "proto/common.proto"` resolves as in Curve.
    let fds = protox::compile(files, ["."])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}

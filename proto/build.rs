//! Compiles the `.proto` files without a system `protoc`: `protox` (a protobuf compiler in
//! Rust) parses them into a `FileDescriptorSet`, and tonic's prost code generator turns that
//! into Rust in `OUT_DIR`. The encoded descriptor set is written next to the code (for the
//! codegen check and, later, gRPC reflection).

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proto/relais/session/v1/session.proto",
    "proto/relais/router/v1/router.proto",
    "proto/relais/admin/v1/admin.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("relais_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .bytes(".")
        .compile_fds(fds)?;
    Ok(())
}

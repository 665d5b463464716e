//! Compiles `proto/raft.proto` with `protox` (a protobuf compiler written in Rust, so no `protoc`
//! is needed) and generates the prost messages, plus the tonic client and server when the
//! `transport` feature is on.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/raft.proto";
    println!("cargo:rerun-if-changed={proto}");
    let transport = std::env::var_os("CARGO_FEATURE_TRANSPORT").is_some();
    let fds = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(transport)
        .build_server(transport)
        .build_transport(transport)
        // Payloads as `bytes::Bytes`: a snapshot chunk is a slice of the snapshot, not a copy.
        .bytes(".")
        .compile_fds(fds)?;
    Ok(())
}

//! Compiles etcd's v3 API (`proto/etcd/api/**`) with `protox` (a protobuf compiler written in
//! Rust, so no `protoc` is needed) and generates the prost messages with the tonic clients and
//! servers. See `proto/README.md` for where the files come from.

/// The files compiled; their imports (Google and OpenAPI annotations) are found under `proto/`.
const PROTOS: [&str; 4] = [
    "proto/etcd/api/etcdserverpb/rpc.proto",
    "proto/etcd/api/mvccpb/kv.proto",
    "proto/etcd/api/authpb/auth.proto",
    "proto/etcd/api/versionpb/version.proto",
];

/// Packages Rust code is generated for. `versionpb` and the HTTP-gateway annotation packages
/// that `rpc.proto` imports only define options, which prost ignores, so they are left out
/// (generating the gateway ones would also need `prost-types`).
const PACKAGES: [&str; 3] = ["etcdserverpb", "mvccpb", "authpb"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let mut fds = protox::compile(PROTOS, ["proto"])?;
    fds.file.retain(|file| PACKAGES.contains(&file.package.as_deref().unwrap_or_default()));
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(true)
        .compile_fds(fds)?;
    Ok(())
}

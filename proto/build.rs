//! Generates the tcpd.v1 messages and services with protox (pure Rust, so no
//! system `protoc` is needed) and tonic-prost-build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/tcpd/v1/tcpd.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // The `Connect` RPC would clash with the generated `connect` constructor;
        // clients build a Channel themselves and call `SocketClient::new`.
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}

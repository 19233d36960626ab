//! Generates the tcpd.v2 messages and services with protox (pure Rust, so no
//! system `protoc` is needed) and tonic-prost-build, and writes the encoded
//! descriptor set for server reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/tcpd/v2/tcpd.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("tcpd_v2_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Clients build a Channel themselves (Unix socket) and call `new`.
        .build_transport(false)
        // prost with empty initial buffers: tonic's default codec allocates
        // 8 KiB each way per RPC, i.e. per connected socket (codec.rs).
        .codec_path("crate::codec::LeanCodec")
        // Payload fields decode as `bytes::Bytes`: a slice of the received
        // HTTP/2 buffer instead of a copy into a new `Vec` (the daemon hands
        // it to the stack as is), and the daemon slices large reads into
        // 64 KiB frames without copying.
        .bytes(".tcpd.v2.ReadResponse.data")
        .bytes(".tcpd.v2.WriteRequest.data")
        .bytes(".tcpd.v2.StreamRequest.data")
        .bytes(".tcpd.v2.StreamWrite.data")
        .bytes(".tcpd.v2.StreamResponse.data")
        .compile_fds(descriptors)?;
    Ok(())
}

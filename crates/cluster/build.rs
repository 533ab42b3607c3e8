//! Generates the peer API's Rust code from `proto/peer.proto` with protox (a
//! pure-Rust protobuf compiler), so a build needs no system `protoc`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").ok_or("no manifest dir")?);
    let proto_dir = manifest.join("../../proto");
    let peer = proto_dir.join("peer.proto");
    // The whole directory, so a new imported file also triggers a rebuild.
    println!("cargo:rerun-if-changed={}", proto_dir.display());
    let fds = protox::compile([&peer], [&proto_dir])?;
    tonic_prost_build::configure()
        // bytes fields as `bytes::Bytes`: decoding slices the receive buffer
        // instead of copying (see `cluster::peer` on what that implies).
        .bytes(".")
        // Decodes each message from one contiguous `Bytes` (see `codec`).
        .codec_path("crate::codec::PeerCodec")
        .compile_fds(fds)?;
    Ok(())
}

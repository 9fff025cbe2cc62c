//! Compiles every proto under `proto/` with protox (a protobuf compiler in Rust, so the build
//! needs no `protoc`) and writes the descriptor set that server reflection and `autodebit call`
//! read.
use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files: Vec<PathBuf> = ["events", "contracts", "scheduler", "charger", "notifier", "analytics", "admin"]
        .iter()
        .map(|p| root.join(format!("autodebit/{p}/v1/{p}.proto")))
        .collect();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let fds = protox::compile(&files, [&root])?;
    std::fs::write(out.join("autodebit_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}

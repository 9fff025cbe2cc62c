//! Compiles every proto under `proto/` and a descriptor set for server reflection.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files: Vec<PathBuf> = ["events", "contracts", "scheduler", "charger", "notifier", "analytics", "admin"]
        .iter()
        .map(|p| root.join(format!("autodebit/{p}/v1/{p}.proto")))
        .collect();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("autodebit_descriptor.bin"))
        .compile_protos(&files, &[root])?;
    Ok(())
}

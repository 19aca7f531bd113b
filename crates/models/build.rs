//! With the `cuda` feature, compiles zoo's own kernels (`src/ops/cuda/*.cu`) to PTX with nvcc
//! (found as Candle's kernels find it: `NVCC`, `PATH` or `CUDA_HOME`; the GPU architecture from
//! `CUDA_COMPUTE_CAP` or nvidia-smi) and writes `$OUT_DIR/ptx.rs`, one `&str` constant per
//! kernel file (`MAX_POOL`, `LRN`). Without the feature it does nothing.
fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    #[cfg(feature = "cuda")]
    if let Err(e) = cuda() {
        // A build script reports by exiting non-zero with the message on stderr.
        eprintln!("zoo-models: compiling the CUDA kernels failed: {e}");
        std::process::exit(1);
    }
}

#[cfg(feature = "cuda")]
fn cuda() -> Result<(), Box<dyn std::error::Error>> {
    // The directory too, so that a new kernel file is picked up.
    println!("cargo::rerun-if-changed=src/ops/cuda");
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    cudaforge::KernelBuilder::new()
        .source_dir("src/ops/cuda")
        .watch(["src/ops/cuda/common.cuh"])
        .arg("-std=c++17")
        .arg("-O3")
        .build_ptx()?
        .write(out_dir.join("ptx.rs"))?;
    Ok(())
}

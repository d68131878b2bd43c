//! Build script. The CUDA kernels under `kernels/` will be compiled here with NVRTC (see
//! DESIGN.md); until the CUDA backend lands there is nothing to compile, and the script only
//! tells cargo when to re-run.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=kernels");
}

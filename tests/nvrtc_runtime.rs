//! The run-time NVRTC path of the CUDA backend: a binary built without NVRTC compiles
//! `kernels/*.cu` the first time a kernel is used. That compile needs no GPU, so it is checked
//! here whenever `libnvrtc.so.13|12` is on the loader path (`.ci/run` puts the pinned wheel's
//! there); without one the test says so and returns.

use gepa_dapo_grn::backend::cuda::{compile_at_run_time, nvrtc_present, ptx};

/// NVRTC on the loader path, or why not.
fn nvrtc_loadable() -> Result<(), String> {
    if nvrtc_present() {
        Ok(())
    } else {
        Err("libnvrtc.so.13 / .so.12 is not on the loader path (LD_LIBRARY_PATH)".into())
    }
}

#[test]
fn every_kernel_file_compiles_at_run_time_with_every_kernel_as_an_entry() {
    if let Err(why) = nvrtc_loadable() {
        if std::env::var("GEPA_REQUIRE_PTX").is_ok_and(|v| v == "1") {
            panic!("GEPA_REQUIRE_PTX=1 but the run-time NVRTC cannot be loaded: {why}");
        }
        eprintln!("skipped: {why}");
        return;
    }
    assert!(!ptx::sources().is_empty());
    for src in ptx::sources() {
        let ptx = compile_at_run_time(src, "compute_80").unwrap_or_else(|e| panic!("{e}"));
        let text = ptx.to_src();
        assert!(text.contains(".target sm_80"), "{}: PTX not for sm_80", src.file);
        for k in src.kernels {
            assert!(text.contains(&format!(".entry {k}(")), "{}: no entry for {k}", src.file);
        }
    }
}

#[test]
fn a_source_error_is_reported_with_the_file_and_nvrtc_log() {
    if let Err(why) = nvrtc_loadable() {
        eprintln!("skipped: {why}");
        return;
    }
    let broken = ptx::KernelSource {
        file: "broken.cu",
        source: "extern \"C\" __global__ void k(float* x) { x[0] = undefined_name; }\n",
        kernels: &["k"],
        ptx: None,
    };
    let err = compile_at_run_time(&broken, "compute_80").expect_err("an undefined name must not compile").to_string();
    assert!(err.contains("broken.cu") && err.contains("undefined_name"), "{err}");
}

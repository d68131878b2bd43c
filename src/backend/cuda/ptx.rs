//! The kernels the CUDA backend loads, embedded at build time (`build.rs`, "PTX for the GPU").
//!
//! Every `kernels/*.cu` is here with its exact source text and the names of its
//! `extern "C" __global__` kernels. When NVRTC was found at build time the PTX it produced for
//! [`arch()`] is embedded too, and a GPU host only has to load it (the driver JIT-compiles PTX
//! for the GPU at hand). When it was not, [`KernelSource::ptx`] is `None` and the backend
//! compiles [`KernelSource::source`] with NVRTC at run time, handing it [`headers()`] by name,
//! the way `build.rs` does.

/// One kernels/*.cu file.
#[derive(Debug)]
pub struct KernelSource {
    /// The file name inside `kernels/` ("grn.cu").
    pub file: &'static str,
    /// The source text, exactly as compiled.
    pub source: &'static str,
    /// The `extern "C" __global__` kernels it defines, in source order (never empty for a file
    /// with kernels; names are unique across files).
    pub kernels: &'static [&'static str],
    /// The PTX NVRTC produced for [`arch()`] at build time; `None` when the build found no
    /// NVRTC.
    pub ptx: Option<&'static str>,
}

include!(concat!(env!("OUT_DIR"), "/cuda_kernels.rs"));

/// Every kernels/*.cu file, sorted by name.
pub fn sources() -> &'static [KernelSource] {
    SOURCES
}

/// The headers the sources include, as (name, text) pairs (common.cuh ...), for a runtime NVRTC compile.
///
/// The names are the file names in `kernels/` (what `#include "..."` says); pass them as the
/// `includeNames` and the texts as the `headers` of `nvrtcCreateProgram`. There are no CUDA
/// headers to add: the kernels are written to need none.
pub fn headers() -> &'static [(&'static str, &'static str)] {
    HEADERS
}

/// The NVRTC version that produced the embedded PTX ("12.8"), None when none was found at build time.
pub fn nvrtc_version() -> Option<&'static str> {
    NVRTC_VERSION
}

/// The virtual architecture the PTX targets ("compute_80").
///
/// `compute_80` unless the build ran with `GEPA_CUDA_ARCH`; a runtime compile of the sources
/// should use the same value so both paths produce the same code.
pub fn arch() -> &'static str {
    ARCH
}

/// The source file defining kernel `name`.
pub fn source_of(name: &str) -> Option<&'static KernelSource> {
    SOURCES.iter().find(|s| s.kernels.contains(&name))
}

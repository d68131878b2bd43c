//! Kernel modules: each `kernels/*.cu` file is one CUDA module, loaded the first time one of
//! its kernels is asked for. The module comes from the PTX `build.rs` embedded, or, when the
//! build found no NVRTC, from compiling the embedded source with NVRTC here (for the device's
//! own architecture). Functions are cached by name.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaContext, CudaFunction, CudaModule};
use cudarc::nvrtc::{CompileOptions, Ptx};

use super::{ptx, CudaError};

pub(super) struct Modules {
    ctx: Arc<CudaContext>,
    capability: (i32, i32),
    loaded: Mutex<Loaded>,
}

#[derive(Default)]
struct Loaded {
    modules: HashMap<&'static str, Arc<CudaModule>>,
    functions: HashMap<String, CudaFunction>,
    compiled_here: Vec<&'static str>,
}

impl Modules {
    pub(super) fn new(ctx: Arc<CudaContext>, capability: (i32, i32)) -> Self {
        Modules { ctx, capability, loaded: Mutex::new(Loaded::default()) }
    }

    /// The kernel `name`, loading its file's module on first use.
    pub(super) fn function(&self, name: &str) -> Result<CudaFunction, CudaError> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = loaded.functions.get(name) {
            return Ok(f.clone());
        }
        let src = ptx::source_of(name).ok_or_else(|| CudaError::UnknownKernel(name.to_string()))?;
        let module = match loaded.modules.get(src.file) {
            Some(m) => m.clone(),
            None => {
                let code = match src.ptx {
                    Some(text) => Ptx::from_src(text),
                    None => {
                        loaded.compiled_here.push(src.file);
                        self.compile(src)?
                    }
                };
                let m = self.ctx.load_module(code)?;
                loaded.modules.insert(src.file, m.clone());
                m
            }
        };
        let f = module.load_function(name)?;
        loaded.functions.insert(name.to_string(), f.clone());
        Ok(f)
    }

    /// NVRTC at run time for the device's own architecture, for builds without embedded PTX.
    fn compile(&self, src: &ptx::KernelSource) -> Result<Ptx, CudaError> {
        let (major, minor) = self.capability;
        compile_at_run_time(src, &format!("compute_{major}{minor}"))
    }

    /// One line per loaded file saying where its code came from.
    pub(super) fn origin(&self) -> String {
        let loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let embedded = match ptx::nvrtc_version() {
            Some(v) => format!("embedded PTX (NVRTC {v}, {})", ptx::arch()),
            None => "no embedded PTX".to_string(),
        };
        if loaded.compiled_here.is_empty() {
            embedded
        } else {
            format!("{embedded}; compiled at first use: {}", loaded.compiled_here.join(", "))
        }
    }
}

/// Compiles one kernel file with the NVRTC found on the loader path (`libnvrtc.so.13` or
/// `.so.12`) for the virtual architecture `arch` ("compute_90"). The headers are spliced in
/// where the source includes them, since a run-time compile has no include directory.
pub fn compile_at_run_time(src: &ptx::KernelSource, arch: &str) -> Result<Ptx, CudaError> {
    if !super::nvrtc_present() {
        return Err(CudaError::Unavailable(format!(
            "kernels/{} must be compiled now (this binary has no embedded PTX: it was built without \
             NVRTC), but libnvrtc.so.13 / .so.12 cannot be loaded: add the CUDA libraries to \
             LD_LIBRARY_PATH, or rebuild with NVRTC_LIB_DIR set",
            src.file
        )));
    }
    // cudarc takes the architecture as a `&'static str`: one short string per distinct value.
    static ARCHS: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let arch: &'static str = {
        let mut known = ARCHS.lock().unwrap_or_else(|p| p.into_inner());
        match known.iter().find(|a| **a == arch) {
            Some(a) => a,
            None => {
                let a: &'static str = Box::leak(arch.to_string().into_boxed_str());
                known.push(a);
                a
            }
        }
    };
    let opts = CompileOptions {
        arch: Some(arch),
        options: vec!["--std=c++17".into(), "-lineinfo".into()],
        name: Some(src.file.to_string()),
        ..Default::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(inline_headers(src.source), opts)
        .map_err(|e| CudaError::Compile(src.file.to_string(), e.to_string()))
}

/// `source` with each `#include "name"` of an embedded header replaced by the header's text.
fn inline_headers(source: &str) -> String {
    let mut out = String::with_capacity(source.len() + 4096);
    for line in source.lines() {
        let t = line.trim();
        let included = t
            .strip_prefix("#include")
            .map(|r| r.trim().trim_matches('"'))
            .and_then(|name| ptx::headers().iter().find(|(h, _)| *h == name));
        match included {
            Some((_, text)) => out.push_str(text),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_spliced_in_place_of_their_include() {
        for src in ptx::sources() {
            let text = inline_headers(src.source);
            assert!(!text.contains("#include \"common.cuh\""), "{}: include left in place", src.file);
            if src.source.contains("#include \"common.cuh\"") {
                assert!(text.contains("block_reduce_sum"), "{}: common.cuh not spliced in", src.file);
            }
            for k in src.kernels {
                assert!(text.contains(k), "{}: kernel {k} lost", src.file);
            }
        }
    }
}

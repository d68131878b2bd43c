//! The CUDA device: cudarc (driver API, NVRTC, cuBLASLt), loaded at run time.
//!
//! Nothing CUDA is linked: cudarc's `dynamic-loading` opens `libcuda.so`, `libnvrtc.so.13|12`
//! and `libcublasLt.so.13|12` on first use, so the binary builds and runs on machines without
//! CUDA. [`CudaDevice::open`] checks for each library first and reports a missing one as an
//! error instead of letting cudarc panic.
//!
//! One context, one stream: every copy, launch and GEMM is queued on it in program order, so
//! no event tracking between streams is needed (it is switched off). Kernels come from the PTX
//! `build.rs` embedded ([`ptx`]), or are compiled with NVRTC the first time a kernel of that
//! file is used when the build had no NVRTC. [`CudaBackend`] is the op set on this device.
//! [`resources`] reports what each kernel costs on an sm_90 GPU (registers, spills, occupancy)
//! from `ptxas`, without a GPU.

mod blas;
mod modules;
pub mod ptx;
pub mod resources;

pub use modules::compile_at_run_time;

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr, DevicePtrMut};

use super::device::{word_range, Device, GemmTypes};
use super::kernel::KernelBackend;
use super::launch::{DevPtr, KernelArgs, Launch, Launcher};
use super::Gemm;

/// The op set on a GPU.
pub type CudaBackend = KernelBackend<CudaDevice>;

/// Why the GPU could not do something.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// A CUDA library could not be loaded, or there is no such device.
    #[error("{0}")]
    Unavailable(String),
    /// A driver API call failed.
    #[error("CUDA driver: {0}")]
    Driver(#[from] cudarc::driver::DriverError),
    /// cuBLASLt failed.
    #[error("cuBLASLt: {0}")]
    Blas(#[from] cudarc::cublaslt::result::CublasError),
    /// NVRTC could not compile a kernel file (its log follows).
    #[error("NVRTC could not compile kernels/{0}:\n{1}")]
    Compile(String, String),
    /// No kernel of that name in `kernels/*.cu`.
    #[error("no kernel named `{0}` in kernels/*.cu")]
    UnknownKernel(String),
    /// A copy outside an allocation: (what, offset, words, allocation length).
    #[error("{0}: words {1}..{1}+{2} are outside an allocation of {3} words")]
    OutOfBounds(&'static str, usize, usize, usize),
}

/// One GPU: its context, the stream everything runs on, cuBLASLt, and the kernels loaded so far.
pub struct CudaDevice {
    ordinal: usize,
    name: String,
    stream: Arc<CudaStream>,
    blas: blas::Blas,
    modules: modules::Modules,
}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// True when the NVIDIA driver library can be loaded (a cheap probe that never panics).
pub fn driver_present() -> bool {
    // SAFETY: only tries `dlopen` on the candidate names and closes what it opened.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// True when NVRTC (`libnvrtc.so.13` / `.so.12`) can be loaded, for compiling kernels at run
/// time (a probe that never panics).
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries `dlopen` on the candidate names and closes what it opened.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Number of CUDA devices, or why there are none usable.
pub fn device_count() -> Result<usize, CudaError> {
    if !driver_present() {
        return Err(CudaError::Unavailable(
            "no NVIDIA driver: libcuda.so could not be loaded (not on the loader path)".into(),
        ));
    }
    let n = CudaContext::device_count()?;
    Ok(usize::try_from(n).unwrap_or(0))
}

impl CudaDevice {
    /// Opens GPU `ordinal`: a context, a stream and a cuBLASLt handle. Fails with a message
    /// naming what is missing (driver, device, cuBLASLt).
    pub fn open(ordinal: usize) -> Result<Self, CudaError> {
        let count = device_count()?;
        if ordinal >= count {
            return Err(CudaError::Unavailable(format!(
                "cuda:{ordinal} does not exist: the driver reports {count} device(s)"
            )));
        }
        // SAFETY: a dlopen probe, as in `driver_present`.
        if !unsafe { cudarc::cublaslt::sys::is_culib_present() } {
            return Err(CudaError::Unavailable(
                "libcublasLt.so.13 / .so.12 could not be loaded: add the CUDA libraries' directory \
                 to LD_LIBRARY_PATH"
                    .into(),
            ));
        }
        let ctx = CudaContext::new(ordinal)?;
        // SAFETY: this device uses a single stream, so there is no cross-stream use for the
        // tracking events to order; switching tracking off before any allocation is allowed.
        unsafe { ctx.disable_event_tracking() };
        let name = ctx.name()?;
        let (major, minor) = ctx.compute_capability()?;
        let stream = ctx.default_stream();
        let blas = blas::Blas::new(stream.clone())?;
        let modules = modules::Modules::new(ctx.clone(), (major, minor));
        Ok(CudaDevice { ordinal, name, stream, blas, modules })
    }

    /// The stream every operation of this device is queued on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Where each kernel file's code came from ("embedded PTX (NVRTC 12.8, compute_80)" or
    /// "compiled at first use"), for `dapo selftest`.
    pub fn kernel_origin(&self) -> String {
        self.modules.origin()
    }
}

/// The bounds of `words` words at `offset` in an allocation of `len`.
fn range(what: &'static str, offset: usize, words: usize, len: usize) -> Result<std::ops::Range<usize>, CudaError> {
    word_range(offset, words, len).ok_or(CudaError::OutOfBounds(what, offset, words, len))
}

impl Launcher for CudaDevice {
    type Function = cudarc::driver::CudaFunction;
    type Error = CudaError;

    fn function(&self, name: &str) -> Result<Self::Function, CudaError> {
        self.modules.function(name)
    }

    unsafe fn launch(&self, f: &Self::Function, cfg: Launch, args: &mut KernelArgs<'_>) -> Result<(), CudaError> {
        // A raw launch does not make the context current the way cudarc's safe calls do.
        self.stream.context().bind_to_thread()?;
        // SAFETY: `args` holds one pointer per kernel parameter, each at a live value of the
        // parameter's type (KernelArgs borrows them for the call); the memory the kernel
        // touches is valid by this function's contract; the stream belongs to this context.
        unsafe {
            cudarc::driver::result::launch_kernel(
                f.cu_function(),
                cfg.grid,
                cfg.block,
                cfg.shared_bytes,
                self.stream.cu_stream(),
                args.as_mut_ptrs(),
            )
        }?;
        Ok(())
    }
}

impl Device for CudaDevice {
    type Mem = CudaSlice<f32>;

    fn describe(&self) -> String {
        format!("cuda:{} {}", self.ordinal, self.name)
    }

    fn alloc(&self, words: usize) -> Result<CudaSlice<f32>, CudaError> {
        Ok(self.stream.alloc_zeros::<f32>(words.max(1))?)
    }

    fn ptr(&self, mem: &CudaSlice<f32>) -> DevPtr {
        // Event tracking is off, so the returned guard records nothing.
        DevPtr(mem.device_ptr(&self.stream).0)
    }

    fn ptr_mut(&self, mem: &mut CudaSlice<f32>) -> DevPtr {
        DevPtr(mem.device_ptr_mut(&self.stream).0)
    }

    fn htod(&self, dst: &mut CudaSlice<f32>, offset: usize, src: &[u32]) -> Result<(), CudaError> {
        let r = range("htod", offset, src.len(), dst.len())?;
        let src: &[f32] = bytemuck::cast_slice(src);
        self.stream.memcpy_htod(src, &mut dst.slice_mut(r))?;
        Ok(())
    }

    fn dtoh(&self, src: &CudaSlice<f32>, offset: usize, dst: &mut [u32]) -> Result<(), CudaError> {
        let r = range("dtoh", offset, dst.len(), src.len())?;
        let dst: &mut [f32] = bytemuck::cast_slice_mut(dst);
        self.stream.memcpy_dtoh(&src.slice(r), dst)?;
        self.stream.synchronize()?;
        Ok(())
    }

    fn dtod(
        &self,
        dst: &mut CudaSlice<f32>,
        dst_offset: usize,
        src: &CudaSlice<f32>,
        src_offset: usize,
        words: usize,
    ) -> Result<(), CudaError> {
        let rs = range("dtod source", src_offset, words, src.len())?;
        let rd = range("dtod destination", dst_offset, words, dst.len())?;
        self.stream.memcpy_dtod(&src.slice(rs), &mut dst.slice_mut(rd))?;
        Ok(())
    }

    fn zero(&self, mem: &mut CudaSlice<f32>, offset: usize, words: usize) -> Result<(), CudaError> {
        let r = range("memset", offset, words, mem.len())?;
        self.stream.memset_zeros(&mut mem.slice_mut(r))?;
        Ok(())
    }

    fn gemm(
        &self,
        out: &mut CudaSlice<f32>,
        a: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
        bias: Option<&CudaSlice<f32>>,
        g: Gemm,
        types: GemmTypes,
    ) -> Result<(), CudaError> {
        self.blas.gemm(out, a, b, bias, g, types)
    }

    fn synchronize(&self) -> Result<(), CudaError> {
        Ok(self.stream.synchronize()?)
    }

    fn free_memory(&self) -> Option<u64> {
        self.stream.context().mem_get_info().ok().map(|(free, _total)| free as u64)
    }

    fn time_ms(&self, run: &mut dyn FnMut() -> Result<(), CudaError>) -> Result<f64, CudaError> {
        let ctx = self.stream.context();
        let start = ctx.new_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT))?;
        let end = ctx.new_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT))?;
        start.record(&self.stream)?;
        run()?;
        end.record(&self.stream)?;
        end.synchronize()?;
        Ok(f64::from(start.elapsed_ms(&end)?))
    }
}

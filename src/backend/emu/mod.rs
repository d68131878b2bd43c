//! Kernel emulation: the exact `kernels/*.cu` sources, compiled for the host by `build.rs`
//! with `kernels/emu/emulate.h`, launched through the same argument list ([`KernelArgs`]) and
//! configuration ([`Launch`]) the CUDA backend hands to `cuLaunchKernel`.
//!
//! It proves a kernel's logic and indexing without a GPU, not its speed: blocks run one after
//! another, each block's CUDA threads as cooperative fibers on the launching OS thread. What
//! it does not model (timing, coalescing, bank conflicts, inter-block races, divergent warps,
//! out-of-bounds accesses, …) is listed in `kernels/README.md` and at the top of
//! `kernels/emu/emulate.h`.
//!
//! Buffers are host memory; their addresses ([`DevPtr::host`](crate::backend::launch::DevPtr::host)) play the device pointers.

mod memory;

use super::launch::{KernelArgs, Launch, Launcher};
pub use memory::{to_tf32, EmuMem};

use std::ffi::c_void;

/// The signature of the generated `emu_<kernel>` entry points (see `build.rs`).
type EmuEntry = unsafe extern "C" fn(u32, u32, u32, u32, u32, u32, u32, *mut *mut c_void, *const usize, usize) -> i32;

include!(concat!(env!("OUT_DIR"), "/emu_kernels.rs"));

/// Why an emulated launch did not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmuError {
    /// No `extern "C" __global__` kernel of that name was compiled.
    #[error("no emulated kernel named `{0}` (kernels compiled: {1})")]
    UnknownKernel(String, String),
    /// Empty grid or block, more than 1024 threads per block, or grid y/z over 65535.
    #[error("kernel `{0}`: invalid launch configuration {1:?}")]
    BadConfig(&'static str, Launch),
    /// More dynamic shared memory than the default 48 KiB.
    #[error("kernel `{0}`: {1:?} asks for more than 48 KiB of dynamic shared memory")]
    TooMuchSharedMemory(&'static str, Launch),
    /// The argument list's length differs from the kernel's parameter count.
    #[error("kernel `{0}`: {1} arguments given, the kernel takes a different number")]
    ArgumentCount(&'static str, usize),
    /// An argument's size differs from its parameter's (e.g. an `i32` for a pointer).
    #[error("kernel `{0}`: argument sizes {1:?} do not match the kernel's parameter types")]
    ArgumentSize(&'static str, Vec<usize>),
    /// Every thread of a block that had not exited waited at a barrier that could never
    /// complete: some at `__syncthreads()`, a warp-mate at a shuffle or `__syncwarp()` (or the
    /// other way round). Undefined behaviour on the device (usually a hang); the emulator stops
    /// the launch instead (code 6).
    #[error("kernel `{0}`: divergent barrier in {1:?}: threads wait at `__syncthreads()` and at a warp shuffle/`__syncwarp()` that can never both complete")]
    DivergentBarrier(&'static str, Launch),
    /// The host could not run the launch (e.g. could not map the fiber stacks).
    #[error("kernel `{0}`: the emulator failed on the host (code {1})")]
    Host(&'static str, i32),
    /// A copy or GEMM outside an allocation: (what, offset, words, allocation length).
    #[error("{0}: words {1}..{1}+{2} are outside an allocation of {3} words")]
    OutOfBounds(&'static str, usize, usize, usize),
}

/// One compiled kernel, looked up by name (the emulated `CUfunction`).
#[derive(Clone, Copy)]
pub struct EmuFunction {
    name: &'static str,
    entry: EmuEntry,
}

impl EmuFunction {
    /// The kernel's name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl std::fmt::Debug for EmuFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmuFunction").field("name", &self.name).finish()
    }
}

/// The emulated device: the host-compiled kernels and their launcher. Launches are
/// synchronous and serialised process-wide (static `__shared__` storage is global state).
///
/// Its GEMM is the CPU's f32 matmul on the operands as tensor cores read them: f32 exactly
/// (cuBLASLt's pedantic f32), rounded to TF32 (a 10-bit mantissa), or bf16 (exact, since they
/// are stored as bf16), the result rounded to bf16 when it is stored as bf16; so the error a
/// GPU's TF32 and bf16 matmuls add can be measured without a GPU.
#[derive(Clone, Copy, Debug, Default)]
pub struct EmuDevice;

extern "C" {
    /// kernels/emu/emulate.h: the thread order of the launches that follow.
    fn gepa_emu_set_reverse_order(on: i32);
}

impl Launcher for EmuDevice {
    type Function = EmuFunction;
    type Error = EmuError;

    fn function(&self, name: &str) -> Result<EmuFunction, EmuError> {
        EmuDevice::function(self, name)
    }

    unsafe fn launch(&self, f: &EmuFunction, cfg: Launch, args: &mut KernelArgs<'_>) -> Result<(), EmuError> {
        // SAFETY: the caller upholds `Launcher::launch`'s contract, which is
        // `EmuDevice::launch`'s.
        unsafe { EmuDevice::launch(self, f, cfg, args) }
    }
}

impl EmuDevice {
    /// Process-wide: runs every block's threads, from the next launch on, in reverse linear
    /// order (`true`) or in linear order (`false`, the default), at the start of the block and
    /// after each barrier. Both are valid executions; a missing barrier shows in only one of
    /// them, so the parity tests run every kernel in both.
    pub fn set_reverse_thread_order(reverse: bool) {
        // SAFETY: the function takes the emulator's launch lock and stores one flag; it has no
        // preconditions.
        unsafe { gepa_emu_set_reverse_order(i32::from(reverse)) }
    }

    /// The emulated device.
    pub fn new() -> Self {
        EmuDevice
    }

    /// Names of every compiled kernel, in source order.
    pub fn kernel_names(&self) -> impl Iterator<Item = &'static str> {
        KERNELS.iter().map(|(n, _)| *n)
    }

    /// The kernel named `name` (as in `module.load_function(name)`).
    pub fn function(&self, name: &str) -> Result<EmuFunction, EmuError> {
        KERNELS.iter().find(|(n, _)| *n == name).map(|&(name, entry)| EmuFunction { name, entry }).ok_or_else(|| {
            EmuError::UnknownKernel(name.to_string(), self.kernel_names().collect::<Vec<_>>().join(", "))
        })
    }

    /// Runs `f` over `cfg` with `args`, returning when every block has finished.
    ///
    /// # Safety
    /// As for `cuLaunchKernel`: every [`DevPtr`](crate::backend::launch::DevPtr) argument must point at memory that is valid,
    /// for the whole launch, for every access the kernel makes with that configuration and
    /// those arguments (reads, and writes through non-`const` parameters), and nothing else
    /// may access that memory during the launch. Argument count and sizes are checked; their
    /// types are not (an `f32` passed for an `int` parameter is not caught).
    pub unsafe fn launch(&self, f: &EmuFunction, cfg: Launch, args: &mut KernelArgs<'_>) -> Result<(), EmuError> {
        let ((gx, gy, gz), (bx, by, bz)) = (cfg.grid, cfg.block);
        let nargs = args.len();
        let sizes = args.sizes().to_vec();
        let ptrs = args.as_mut_ptrs();
        // SAFETY: `entry` is a generated `emu_<kernel>` wrapper with exactly this signature.
        // `ptrs` and `sizes` both hold `nargs` entries and outlive the call; each `ptrs[i]`
        // points at a live `KernelParam` value of `sizes[i]` bytes (borrowed by `args`), and the
        // wrapper checks count and sizes before reading them. The memory the kernel touches is
        // valid by this function's contract. The wrapper catches C++ exceptions (it is
        // `noexcept` and returns a code), so none unwinds into Rust.
        let code =
            unsafe { (f.entry)(gx, gy, gz, bx, by, bz, cfg.shared_bytes, ptrs.as_mut_ptr(), sizes.as_ptr(), nargs) };
        match code {
            0 => Ok(()),
            1 => Err(EmuError::BadConfig(f.name, cfg)),
            2 => Err(EmuError::TooMuchSharedMemory(f.name, cfg)),
            3 => Err(EmuError::ArgumentCount(f.name, nargs)),
            4 => Err(EmuError::ArgumentSize(f.name, sizes)),
            6 => Err(EmuError::DivergentBarrier(f.name, cfg)),
            c => Err(EmuError::Host(f.name, c)),
        }
    }
}

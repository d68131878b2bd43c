//! Launch wrappers of the fused kernels in `kernels/*.cu`, shared by every device that can
//! launch them: the emulator ([`EmuDevice`]) today, the CUDA backend later. Each op family has
//! a file of `unsafe fn`s, generic over [`Launcher`], that take device pointers ([`DevPtr`])
//! plus shapes, choose grid, block and shared memory, and build the kernel's argument list in
//! its parameter order. Because the emulator runs the same wrappers, the parity tests
//! (`tests/kernel_parity.rs`) check the launch code as well as the kernels.
//!
//! Shape names: B sequences, T positions, C channels (GRN); N rows, V vocabulary (log-probs);
//! S sequences, L tokens per sequence (policy loss).

pub mod advantage;
pub mod attention;
pub mod basic;
pub mod grn;
pub mod logprob;
pub mod norm;
pub mod policy_loss;
pub mod sampling;

use super::emu::{EmuDevice, EmuError, EmuFunction, KernelArgs, Launch};

pub use super::emu::DevPtr;

/// A device that can look kernels up by name and launch them (`cuModuleGetFunction` +
/// `cuLaunchKernel`).
pub trait Launcher {
    /// A loaded kernel.
    type Function;
    /// Why a lookup or launch failed.
    type Error: std::error::Error;

    /// The kernel named `name`.
    fn function(&self, name: &str) -> Result<Self::Function, Self::Error>;

    /// Launches `f` over `cfg` with `args` on the device's stream.
    ///
    /// # Safety
    /// Every [`DevPtr`] in `args` must point at device memory valid, for the whole launch, for
    /// every access the kernel makes with that configuration and those arguments, and nothing
    /// else may write that memory (or read what the kernel writes) until the launch completes.
    unsafe fn launch(&self, f: &Self::Function, cfg: Launch, args: &mut KernelArgs<'_>) -> Result<(), Self::Error>;
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

/// Looks `name` up and launches it: the one call every wrapper ends with.
///
/// # Safety
/// As [`Launcher::launch`].
unsafe fn run<L: Launcher>(dev: &L, name: &str, cfg: Launch, args: &mut KernelArgs<'_>) -> Result<(), L::Error> {
    let f = dev.function(name)?;
    // SAFETY: forwarded from the caller.
    unsafe { dev.launch(&f, cfg, args) }
}

/// A shape as the kernels' `int`.
///
/// # Panics
/// If it does not fit in an `i32` (the kernels index with 64-bit offsets, but take shapes as `int`).
fn dim(what: &str, v: usize) -> i32 {
    i32::try_from(v).unwrap_or_else(|_| panic!("{what} = {v} does not fit in a kernel's int"))
}

/// Threads per block for a block that strides over `work` items: a multiple of 32, at most `max`.
fn threads_for(work: usize, max: u32) -> u32 {
    let w = u32::try_from(work.div_ceil(32) * 32).unwrap_or(u32::MAX);
    w.clamp(32, max)
}

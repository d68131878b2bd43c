//! What a kernel-running device provides: memory, kernel launches ([`Launcher`]), a GEMM and
//! a timer. Two devices implement it: the real GPU ([`crate::backend::cuda::CudaDevice`]:
//! cudarc + cuBLASLt) and the emulator ([`crate::backend::emu::EmuDevice`]: host memory, the
//! `kernels/*.cu` sources compiled for the host, the CPU matmul). [`KernelBackend`] builds the
//! [`crate::backend::Backend`] op set on top of either, so every line between the op set and
//! `cuLaunchKernel` runs in CI under emulation.
//!
//! Memory is typed as 32-bit words: f32 values, u32 token ids and bf16 values (two to a word)
//! share one buffer type, and the kernels take all of them as pointers; the host side converts
//! with `bytemuck` and [`super::precision::pack_bf16`].
//!
//! [`KernelBackend`]: crate::backend::kernel::KernelBackend

use super::launch::{DevPtr, Launcher};
use super::precision::{Dtype, MatmulPrecision};
use super::Gemm;

/// What a GEMM's operands and result hold, and how f32 operands are multiplied: `a` and `b`
/// share one type (the kernel backend converts a lone f32 operand of a bf16 product first);
/// bf16 operands always multiply on bf16 tensor cores with f32 accumulation; the bias, when
/// there is one, is f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmTypes {
    /// The type of both operands.
    pub inputs: Dtype,
    /// The type of `out` (accumulation into a bf16 `out` adds in f32, then rounds).
    pub out: Dtype,
    /// How f32 operands are multiplied (ignored for bf16 operands).
    pub matmul: MatmulPrecision,
}

/// A device that holds memory and runs the `kernels/*.cu` kernels.
pub trait Device: Launcher + Send + Sync + 'static {
    /// A device allocation of 32-bit words.
    type Mem: Send + Sync;

    /// What this device is, for logs and `dapo selftest` ("cuda:0 NVIDIA H100 80GB HBM3").
    fn describe(&self) -> String;

    /// A zero-filled allocation of `words` words (at least one, so every allocation has a
    /// distinct valid address).
    fn alloc(&self, words: usize) -> Result<Self::Mem, Self::Error>;

    /// The address of word 0, for kernel arguments that are only read.
    fn ptr(&self, mem: &Self::Mem) -> DevPtr;

    /// The address of word 0, for kernel arguments that are written.
    fn ptr_mut(&self, mem: &mut Self::Mem) -> DevPtr;

    /// Copies `src` into words `offset ..` of `dst`.
    fn htod(&self, dst: &mut Self::Mem, offset: usize, src: &[u32]) -> Result<(), Self::Error>;

    /// Copies words `offset .. offset + dst.len()` of `src` to the host, after every queued
    /// launch has finished.
    fn dtoh(&self, src: &Self::Mem, offset: usize, dst: &mut [u32]) -> Result<(), Self::Error>;

    /// Copies `words` words from `src[src_offset..]` to `dst[dst_offset..]` (distinct buffers).
    fn dtod(
        &self,
        dst: &mut Self::Mem,
        dst_offset: usize,
        src: &Self::Mem,
        src_offset: usize,
        words: usize,
    ) -> Result<(), Self::Error>;

    /// Sets words `offset .. offset + words` to zero.
    fn zero(&self, mem: &mut Self::Mem, offset: usize, words: usize) -> Result<(), Self::Error>;

    /// `out = op(a)·op(b) (+ bias) (+ out)`, row-major, as [`Gemm`] describes, on the types
    /// [`GemmTypes`] gives (bf16 values packed two to a word). The caller has checked the
    /// buffer sizes.
    fn gemm(
        &self,
        out: &mut Self::Mem,
        a: &Self::Mem,
        b: &Self::Mem,
        bias: Option<&Self::Mem>,
        g: Gemm,
        types: GemmTypes,
    ) -> Result<(), Self::Error>;

    /// Waits for every queued launch and copy.
    fn synchronize(&self) -> Result<(), Self::Error>;

    /// Bytes that can still be allocated, when the device can tell (a GPU's free memory; the
    /// emulator's host memory), for refusing a run that cannot fit before it starts.
    fn free_memory(&self) -> Option<u64> {
        None
    }

    /// Device time of the work `run` queues, in milliseconds (CUDA events on a GPU, the wall
    /// clock under emulation, where launches are synchronous).
    fn time_ms(&self, run: &mut dyn FnMut() -> Result<(), Self::Error>) -> Result<f64, Self::Error>;
}

/// Words `offset .. offset + words` of an allocation of `len` words, or `None` when that range
/// overflows or leaves the allocation (each device turns `None` into its own error).
pub fn word_range(offset: usize, words: usize, len: usize) -> Option<std::ops::Range<usize>> {
    offset.checked_add(words).filter(|&end| end <= len).map(|end| offset..end)
}

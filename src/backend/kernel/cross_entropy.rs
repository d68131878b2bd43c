//! The fused weighted softmax cross-entropy (`kernels/cross_entropy.cu`): one block per row
//! of N rows of V logits, the gradient written over the logits.

use super::{DeviceBuf, KernelBackend};
use crate::backend::device::Device;
use crate::backend::launch::{dim, run, threads_for, DevPtr, KernelArgs, Launch, Launcher};
use crate::backend::ops::CrossEntropyOps;
use crate::backend::shapes::CrossEntropyShape;

/// Threads per cross-entropy row: enough to stride V, at most 256 (V = 50257 gives each
/// thread ~200 columns; N ≈ B·T rows give thousands of blocks, which fill the GPU).
fn ce_block(v: usize) -> u32 {
    threads_for(v, 256)
}

/// `cross_entropy_f32`: `losses[i] = weights[i]·(−log softmax(logits[i])[targets[i]])` for the
/// N rows of `logits (N,V)`; with `backward`, each row is overwritten by
/// `weights[i]·(softmax − onehot(targets[i]))`, else the logits are left as they are. A target
/// ≥ V gives a NaN loss (and a NaN row with `backward`). One block per row; nothing is
/// launched when N = 0 (or V = 0, where no row has a valid target).
///
/// # Safety
/// `logits` must address N·V f32 (written with `backward`); `targets` (u32), `weights` and
/// `losses` (f32) N values; `losses` and `logits` must not overlap each other or the inputs.
unsafe fn cross_entropy<L: Launcher>(
    dev: &L,
    [logits, losses]: [DevPtr; 2],
    [targets, weights]: [DevPtr; 2],
    s: CrossEntropyShape,
    backward: bool,
) -> Result<(), L::Error> {
    let CrossEntropyShape { n, v } = s;
    if n == 0 || v == 0 {
        return Ok(());
    }
    let (ni, vi, bwd) = (dim("N", n), dim("V", v), i32::from(backward));
    let mut args = KernelArgs::new();
    args.arg(&logits).arg(&losses).arg(&targets).arg(&weights).arg(&ni).arg(&vi).arg(&bwd);
    // SAFETY: block r reads (and with backward overwrites) logits row r, reads targets[r] and
    // weights[r], writes losses[r]; the caller guarantees the extents and no aliasing.
    unsafe { run(dev, "cross_entropy_f32", Launch::linear(ni as u32, ce_block(v)), &mut args) }
}

impl<D: Device> CrossEntropyOps for KernelBackend<D> {
    fn cross_entropy(
        &self,
        logits: &mut DeviceBuf<D>,
        losses: &mut DeviceBuf<D>,
        targets: &DeviceBuf<D>,
        weights: &DeviceBuf<D>,
        s: CrossEntropyShape,
        backward: bool,
    ) {
        let CrossEntropyShape { n, v } = s;
        let shapes = format!("N={n}, V={v}, backward={backward}");
        let sizes = [logits.len, losses.len, targets.len, weights.len];
        assert_eq!(sizes, [n * v, n, n, n], "cross_entropy ({shapes}): buffer sizes");
        let outs = [self.ptr32_mut(logits), self.ptr32_mut(losses)];
        let ins = [self.ptr32(targets), self.ptr32(weights)];
        // SAFETY: sizes checked above; logits and losses (written) are distinct allocations
        // (two &mut), not the inputs.
        let res = unsafe { cross_entropy(&*self.dev, outs, ins, s, backward) };
        self.ok("cross_entropy", &shapes, res);
    }
}

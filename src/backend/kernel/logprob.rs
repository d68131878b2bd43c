//! The fused log-softmax gather + entropy (`kernels/logprob.cu`): one block per row of a
//! chunk of vocabulary-sized logits.

use super::{DeviceBuf, KernelBackend};
use crate::backend::device::Device;
use crate::backend::launch::{dim, run, threads_for, DevPtr, KernelArgs, Launch, Launcher};
use crate::backend::ops::{check_logprob_chunk, LogprobOps};
use crate::backend::shapes::LogprobChunk;

/// Threads per row: enough to stride V, at most 256 (V ≈ 50k gives each thread ~200 columns).
fn block(v: usize) -> u32 {
    threads_for(v, 256)
}

/// Both logprob kernels take four pointers, then (row0, rows, V, 1/temperature), one block
/// per chunk row.
///
/// # Safety
/// The caller's contract for the kernel `name`, whose first four parameters are `ptrs`.
unsafe fn launch_rows<L: Launcher>(dev: &L, name: &str, ptrs: [DevPtr; 4], ch: LogprobChunk) -> Result<(), L::Error> {
    if ch.rows == 0 || ch.v == 0 {
        return Ok(());
    }
    let (row0, rows, v) = (dim("row0", ch.row0), dim("rows", ch.rows), dim("V", ch.v));
    let inv_t = ch.inv_temperature;
    let mut args = KernelArgs::new();
    for p in &ptrs {
        args.arg(p);
    }
    args.arg(&row0).arg(&rows).arg(&v).arg(&inv_t);
    // SAFETY: forwarded from the caller.
    unsafe { run(dev, name, Launch::linear(rows as u32, block(ch.v)), &mut args) }
}

/// `logprob_entropy_forward_f32`: `logp[row0 + r]`, `entropy[row0 + r]` for each row r of the
/// chunk (N, the length of the per-token buffers, is at least row0 + rows). A target ≥ V
/// gives a NaN log-prob. One block per row.
///
/// # Safety
/// `logits` must address rows·V f32; `targets` (u32), `logp` and `entropy` (f32) at least
/// row0 + rows values; `logp` and `entropy` must not overlap each other or the inputs.
unsafe fn logprob_entropy_forward<L: Launcher>(
    dev: &L,
    logp: DevPtr,
    entropy: DevPtr,
    logits: DevPtr,
    targets: DevPtr,
    ch: LogprobChunk,
) -> Result<(), L::Error> {
    // SAFETY: block r reads logits row r and targets[row0 + r], writes logp/entropy[row0 + r].
    unsafe { launch_rows(dev, "logprob_entropy_forward_f32", [logp, entropy, logits, targets], ch) }
}

/// `logprob_entropy_backward_f32`: overwrites the chunk's rows·V logits with d/dlogits given
/// `dlogp` and `dentropy` (indexed like `logp`). A target ≥ V fills its row with NaN; a row
/// with zero upstream gradients gets zeros. One block per row.
///
/// # Safety
/// `logits` must address rows·V f32 (written); `targets`, `dlogp`, `dentropy` at least
/// row0 + rows values, not overlapping `logits`.
unsafe fn logprob_entropy_backward<L: Launcher>(
    dev: &L,
    logits: DevPtr,
    targets: DevPtr,
    dlogp: DevPtr,
    dentropy: DevPtr,
    ch: LogprobChunk,
) -> Result<(), L::Error> {
    // SAFETY: block r reads and overwrites logits row r only, reads the per-token inputs at row0 + r.
    unsafe { launch_rows(dev, "logprob_entropy_backward_f32", [logits, targets, dlogp, dentropy], ch) }
}

impl<D: Device> LogprobOps for KernelBackend<D> {
    fn logprob_entropy_forward(
        &self,
        logits: &DeviceBuf<D>,
        targets: &DeviceBuf<D>,
        logp: &mut DeviceBuf<D>,
        entropy: &mut DeviceBuf<D>,
        chunk: LogprobChunk,
    ) {
        check_logprob_chunk("logprob_entropy_forward", chunk, logits.len, targets.len, [logp.len, entropy.len]);
        let (lp, h, x, t) = (self.ptr32_mut(logp), self.ptr32_mut(entropy), self.ptr32(logits), self.ptr32(targets));
        // SAFETY: logits holds rows·V f32, targets/logp/entropy at least row0 + rows values
        // (checked above); logp and entropy are distinct allocations, not the inputs.
        let r = unsafe { logprob_entropy_forward(&*self.dev, lp, h, x, t, chunk) };
        self.ok("logprob_entropy_forward", format_args!("{chunk:?}"), r);
    }

    fn logprob_entropy_backward(
        &self,
        logits: &mut DeviceBuf<D>,
        targets: &DeviceBuf<D>,
        dlogp: &DeviceBuf<D>,
        dentropy: &DeviceBuf<D>,
        chunk: LogprobChunk,
    ) {
        check_logprob_chunk("logprob_entropy_backward", chunk, logits.len, targets.len, [dlogp.len, dentropy.len]);
        let (x, t, gl, gh) = (self.ptr32_mut(logits), self.ptr32(targets), self.ptr32(dlogp), self.ptr32(dentropy));
        // SAFETY: sizes checked above; logits (written) is a distinct allocation from the inputs.
        let r = unsafe { logprob_entropy_backward(&*self.dev, x, t, gl, gh, chunk) };
        self.ok("logprob_entropy_backward", format_args!("{chunk:?}"), r);
    }
}

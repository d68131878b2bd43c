//! The optimizer's ops (`kernels/optim.cu`): AdamW, the global gradient norm and scaling,
//! elementwise with grid-stride loops.

use super::{DeviceBuf, KernelBackend};
use crate::backend::device::Device;
use crate::backend::launch::{count, dim, run, DevPtr, KernelArgs, Launch, Launcher};
use crate::backend::ops::OptimOps;
use crate::backend::shapes::AdamWStep;

/// Threads per block of the global norm's final reduction (one block).
const FINAL_THREADS: u32 = 1024;

/// `adamw_f32`: one AdamW step in place over `n` values, with the oracle's bias corrections
/// (`1 − β^step` computed here in f32 exactly as `cpu::optim::adamw` does).
///
/// # Safety
/// `param`, `grad`, `m`, `v` hold `n` f32 each, in four non-overlapping buffers.
unsafe fn adamw<L: Launcher>(
    dev: &L,
    [param, grad, m, v]: [DevPtr; 4],
    n: usize,
    h: &AdamWStep,
) -> Result<(), L::Error> {
    if n == 0 {
        return Ok(());
    }
    let bc1 = 1.0 - h.beta1.powi(h.step as i32);
    let bc2 = 1.0 - h.beta2.powi(h.step as i32);
    let nn = count(n);
    let mut args = KernelArgs::new();
    args.arg(&param).arg(&grad).arg(&m).arg(&v).arg(&nn);
    args.arg(&h.lr).arg(&h.beta1).arg(&h.beta2).arg(&h.eps).arg(&h.weight_decay).arg(&bc1).arg(&bc2);
    args.arg(&h.grad_scale);
    // SAFETY: element i reads grad[i] and updates param[i], m[i], v[i], i < n.
    unsafe { run(dev, "adamw_f32", Launch::elementwise(n), &mut args) }
}

/// Partial sums the global norm needs for a buffer of `n` values: one per block of its launch.
pub(crate) fn global_norm_partials(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        Launch::elementwise(n).grid.0 as usize
    }
}

/// The global norm of several buffers, `(pointer, length)`: one `global_norm_partial_f32`
/// launch per non-empty buffer writes its block sums of squares into consecutive slots of
/// `partial`, then `global_norm_final_f32` (one block of 1024 threads) sums all partials and
/// writes `sqrt` into `out[0]`. When every buffer is empty, writes nothing (the norm is 0).
///
/// # Safety
/// Each buffer holds its stated length of f32; `partial` holds at least
/// Σ [`global_norm_partials`]`(len)` f32 and `out` one f32, neither overlapping the buffers or
/// each other.
unsafe fn global_norm<L: Launcher>(
    dev: &L,
    out: DevPtr,
    partial: DevPtr,
    bufs: &[(DevPtr, usize)],
) -> Result<(), L::Error> {
    let mut slots = 0usize;
    for &(x, n) in bufs {
        if n == 0 {
            continue;
        }
        let slot = partial.offset(slots);
        let nn = count(n);
        let mut args = KernelArgs::new();
        args.arg(&slot).arg(&x).arg(&nn);
        // SAFETY: block b reads its grid-stride share of x[0..n) and writes slot[b]; the grid
        // has global_norm_partials(n) blocks, inside the workspace the caller provides.
        unsafe { run(dev, "global_norm_partial_f32", Launch::elementwise(n), &mut args) }?;
        slots += global_norm_partials(n);
    }
    if slots == 0 {
        return Ok(());
    }
    let pi = dim("partials", slots);
    let mut args = KernelArgs::new();
    args.arg(&out).arg(&partial).arg(&pi);
    // SAFETY: one block reads partial[0..slots) (written by the launches above, earlier on the
    // same stream) and writes out[0].
    unsafe { run(dev, "global_norm_final_f32", Launch::linear(1, FINAL_THREADS), &mut args) }
}

/// `scale_f32`: `x *= alpha` over `n` values.
///
/// # Safety
/// `x` holds `n` f32.
unsafe fn scale<L: Launcher>(dev: &L, x: DevPtr, n: usize, alpha: f32) -> Result<(), L::Error> {
    if n == 0 {
        return Ok(());
    }
    let nn = count(n);
    let mut args = KernelArgs::new();
    args.arg(&x).arg(&nn).arg(&alpha);
    // SAFETY: element i updates x[i], i < n.
    unsafe { run(dev, "scale_f32", Launch::elementwise(n), &mut args) }
}

impl<D: Device> OptimOps for KernelBackend<D> {
    fn adamw(
        &self,
        param: &mut DeviceBuf<D>,
        grad: &DeviceBuf<D>,
        m: &mut DeviceBuf<D>,
        v: &mut DeviceBuf<D>,
        h: AdamWStep,
    ) {
        let n = param.len;
        let shapes = format!("N={n}, step={}", h.step);
        assert!(
            grad.len == n && m.len == n && v.len == n,
            "adamw ({shapes}): grad {}, m {}, v {} values",
            grad.len,
            m.len,
            v.len
        );
        let ptrs = [self.ptr32_mut(param), self.ptr32(grad), self.ptr32_mut(m), self.ptr32_mut(v)];
        // SAFETY: four distinct allocations of N f32 each (checked above).
        let r = unsafe { adamw(&*self.dev, ptrs, n, &h) };
        self.ok("adamw", &shapes, r);
    }

    /// Per-block partial sums into a device workspace, one final block, one f32 downloaded.
    fn global_norm(&self, bufs: &[&DeviceBuf<D>]) -> f32 {
        let slots: usize = bufs.iter().map(|b| global_norm_partials(b.len)).sum();
        if slots == 0 {
            return 0.0; // no values at all: the oracle's empty sum
        }
        let shapes = format!("{} buffers, {} values", bufs.len(), bufs.iter().map(|b| b.len).sum::<usize>());
        let mut partial = self.scratch("global_norm", slots);
        let mut out = self.scratch("global_norm", 1);
        let list: Vec<_> = bufs.iter().map(|b| (self.ptr32(b), b.len)).collect();
        let (o, p) = (self.ptr32_mut(&mut out), self.ptr32_mut(&mut partial));
        // SAFETY: each buffer holds its own length; partial holds exactly the partial slots the
        // launches write, out one f32; both are workspaces lent to this call alone.
        let r = unsafe { global_norm(&*self.dev, o, p, &list) };
        self.ok("global_norm", &shapes, r);
        f32::from_bits(self.download_words(&out)[0])
    }

    fn scale(&self, buf: &mut DeviceBuf<D>, alpha: f32) {
        let n = buf.len;
        let x = self.ptr32_mut(buf);
        // SAFETY: buf holds N f32.
        let r = unsafe { scale(&*self.dev, x, n, alpha) };
        self.ok("scale", format_args!("N={n}"), r);
    }
}

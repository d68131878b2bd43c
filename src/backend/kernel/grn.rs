//! GRN (`kernels/grn.cu`): the causal form in front of the policy head (prefix norms by a
//! scan per (b, c), then one block per row; its KV-cache step), and the sequence-wide form for
//! the value / judge head (one block per sequence). The device form of
//! [`crate::backend::cpu::grn`].

use super::{DeviceBuf, KernelBackend};
use crate::backend::device::Device;
use crate::backend::launch::{dim, run, threads_for, DevPtr, KernelArgs, Launch, Launcher};
use crate::backend::ops::{GrnOps, MemoryOps};
use crate::backend::shapes::{GrnCausalStats, GrnParams, GrnSeqStats, GrnShape, GrnStepShape, Masked};

/// Largest block the GRN kernels use (one block per sequence, threads stride over C).
const MAX_THREADS: u32 = 256;

/// The device buffers of one GRN forward (shapes B, T, C).
#[derive(Clone, Copy, Debug)]
struct GrnForward {
    /// out (B,T,C), written.
    pub out: DevPtr,
    /// G (B,C), written.
    pub g: DevPtr,
    /// μ (B), written.
    pub mean: DevPtr,
    /// N (B,C), written.
    pub n: DevPtr,
    /// x (B,T,C).
    pub x: DevPtr,
    /// mask (B,T), non-zero = real position.
    pub mask: DevPtr,
    /// γ (C).
    pub gamma: DevPtr,
    /// β (C).
    pub beta: DevPtr,
}

/// The device buffers of one GRN backward (shapes B, T, C).
#[derive(Clone, Copy, Debug)]
struct GrnBackward {
    /// dx (B,T,C), overwritten.
    pub dx: DevPtr,
    /// dγ (C), accumulated.
    pub dgamma: DevPtr,
    /// dβ (C), accumulated.
    pub dbeta: DevPtr,
    /// Workspace of 2·B·C f32, overwritten.
    pub partial: DevPtr,
    /// dy (B,T,C).
    pub dy: DevPtr,
    /// The forward's x (B,T,C).
    pub x: DevPtr,
    /// mask (B,T).
    pub mask: DevPtr,
    /// γ (C).
    pub gamma: DevPtr,
    /// The forward's G (B,C).
    pub g: DevPtr,
    /// The forward's μ (B).
    pub mean: DevPtr,
    /// The forward's N (B,C).
    pub n: DevPtr,
}

/// `grn_forward_f32`: one block per sequence. Nothing is launched when B·T·C = 0 (the caller
/// zeroes g, n, mean itself then, as the oracle does).
///
/// # Safety
/// Every pointer of `p` must address device memory holding at least the f32 count its field
/// names for these B, T, C; the written buffers must not overlap each other or the inputs.
unsafe fn grn_forward<L: Launcher>(dev: &L, p: &GrnForward, s: GrnShape) -> Result<(), L::Error> {
    let GrnShape { b, t, c, eps } = s;
    if b * t * c == 0 {
        return Ok(());
    }
    let (bi, ti, ci) = (dim("B", b), dim("T", t), dim("C", c));
    let cfg = Launch::linear(bi as u32, threads_for(c, MAX_THREADS));
    let mut args = KernelArgs::new();
    args.arg(&p.out).arg(&p.g).arg(&p.mean).arg(&p.n).arg(&p.x).arg(&p.mask).arg(&p.gamma).arg(&p.beta);
    args.arg(&bi).arg(&ti).arg(&ci).arg(&eps);
    // SAFETY: block b reads x/mask of sequence b, γ, β and writes out, g, n, mean of sequence
    // b only; the caller guarantees those extents.
    unsafe { run(dev, "grn_forward_f32", cfg, &mut args) }
}

/// `grn_backward_f32` then `grn_param_grad_f32`: overwrites dx, accumulates dγ, dβ.
///
/// # Safety
/// As [`grn_forward`], for the fields of `p` (`partial` holds 2·B·C f32); dx, dγ, dβ and
/// `partial` must not overlap each other or the inputs.
unsafe fn grn_backward<L: Launcher>(dev: &L, p: &GrnBackward, s: GrnShape) -> Result<(), L::Error> {
    let GrnShape { b, t, c, eps } = s;
    if b * t * c == 0 {
        return Ok(());
    }
    let (bi, ti, ci) = (dim("B", b), dim("T", t), dim("C", c));
    let cfg = Launch::linear(bi as u32, threads_for(c, MAX_THREADS));
    let mut args = KernelArgs::new();
    args.arg(&p.dx).arg(&p.partial).arg(&p.dy).arg(&p.x).arg(&p.mask).arg(&p.gamma).arg(&p.g).arg(&p.mean).arg(&p.n);
    args.arg(&bi).arg(&ti).arg(&ci).arg(&eps);
    // SAFETY: block b writes dx of sequence b and partial[b, 0..2C], reads its own inputs.
    unsafe { run(dev, "grn_backward_f32", cfg, &mut args) }?;
    let mut args = KernelArgs::new();
    args.arg(&p.dgamma).arg(&p.dbeta).arg(&p.partial).arg(&bi).arg(&ci);
    // SAFETY: thread c reads partial[:, c] and partial[:, C + c] (written by the launch above,
    // which completed first on the same stream) and updates dγ[c], dβ[c].
    unsafe { run(dev, "grn_param_grad_f32", Launch::cover(c, 128), &mut args) }
}

// ---- causal form ---------------------------------------------------------------------------

/// Threads per block of the row kernels (one block per row, threads stride over C).
const ROW_THREADS: u32 = 256;
/// Threads per block of the per-(b, c) scans.
const SCAN_THREADS: u32 = 128;

/// The device buffers of one causal GRN forward (shapes B, T, C).
#[derive(Clone, Copy, Debug)]
struct GrnCausalForward {
    /// out (B,T,C), written.
    pub out: DevPtr,
    /// Prefix norms G (B,T,C), written.
    pub g: DevPtr,
    /// Their channel means (B,T), written.
    pub mean: DevPtr,
    /// x (B,T,C).
    pub x: DevPtr,
    /// γ (C).
    pub gamma: DevPtr,
    /// β (C).
    pub beta: DevPtr,
}

/// `grn_causal_norms_f32` (prefix norms) then `grn_rows_apply_f32` over the B·T rows.
///
/// # Safety
/// Every pointer of `p` must address device memory holding the f32 count its field names for
/// these B, T, C; the written buffers must not overlap each other or the inputs.
unsafe fn grn_causal_forward<L: Launcher>(dev: &L, p: &GrnCausalForward, s: GrnShape) -> Result<(), L::Error> {
    let GrnShape { b, t, c, eps } = s;
    if b * t * c == 0 {
        return Ok(());
    }
    let (bi, ti, ci, ri) = (dim("B", b), dim("T", t), dim("C", c), dim("B·T", b * t));
    let mut args = KernelArgs::new();
    args.arg(&p.g).arg(&p.x).arg(&bi).arg(&ti).arg(&ci);
    // SAFETY: thread (b, c) reads x[b, :, c] and writes g[b, :, c]; extents from the caller.
    unsafe { run(dev, "grn_causal_norms_f32", Launch::cover(b * c, SCAN_THREADS), &mut args) }?;
    // SAFETY: as the rows kernel below, over R = B·T rows.
    unsafe { rows_apply(dev, [p.out, p.mean], [p.g, p.x, p.gamma, p.beta], (ri, ci, eps)) }
}

/// `grn_rows_apply_f32`: one block per row.
///
/// # Safety
/// out, g, x hold R·C f32, mean R, γ and β C; out and mean do not overlap the inputs.
unsafe fn rows_apply<L: Launcher>(
    dev: &L,
    [out, mean]: [DevPtr; 2],
    [g, x, gamma, beta]: [DevPtr; 4],
    (r, c, eps): (i32, i32, f32),
) -> Result<(), L::Error> {
    let cfg = Launch::linear(r as u32, threads_for(c as usize, ROW_THREADS));
    let mut args = KernelArgs::new();
    args.arg(&out).arg(&mean).arg(&g).arg(&x).arg(&gamma).arg(&beta).arg(&r).arg(&c).arg(&eps);
    // SAFETY: block r reads row r of g and x, γ, β, and writes row r of out and mean[r].
    unsafe { run(dev, "grn_rows_apply_f32", cfg, &mut args) }
}

/// The device buffers of one causal GRN backward (shapes B, T, C).
#[derive(Clone, Copy, Debug)]
struct GrnCausalBackward {
    /// dx (B,T,C), overwritten.
    pub dx: DevPtr,
    /// dγ (C), accumulated.
    pub dgamma: DevPtr,
    /// dβ (C), accumulated.
    pub dbeta: DevPtr,
    /// Workspace of 2·B·C + B·T f32, overwritten.
    pub work: DevPtr,
    /// dy (B,T,C).
    pub dy: DevPtr,
    /// The forward's x (B,T,C).
    pub x: DevPtr,
    /// γ (C).
    pub gamma: DevPtr,
    /// The forward's G (B,T,C).
    pub g: DevPtr,
    /// The forward's means (B,T).
    pub mean: DevPtr,
}

/// f32 values of the workspace [`grn_causal_backward`] needs: per-sequence parameter partials
/// (B, 2C) and one coefficient per row (B·T).
fn causal_backward_workspace(b: usize, t: usize, c: usize) -> usize {
    2 * b * c + b * t
}

/// `grn_causal_coef_f32` (one block per row), `grn_causal_backward_f32` (a reverse scan per
/// (b, c)), then `grn_param_grad_f32`: overwrites dx, accumulates dγ, dβ.
///
/// # Safety
/// As [`grn_causal_forward`], for the fields of `p` (`work` holds
/// [`causal_backward_workspace`] f32); dx, dγ, dβ and `work` must not overlap each other or
/// the inputs.
unsafe fn grn_causal_backward<L: Launcher>(dev: &L, p: &GrnCausalBackward, s: GrnShape) -> Result<(), L::Error> {
    let GrnShape { b, t, c, eps } = s;
    if b * t * c == 0 {
        return Ok(());
    }
    let (bi, ti, ci, ri) = (dim("B", b), dim("T", t), dim("C", c), dim("B·T", b * t));
    let partial = p.work;
    let kc = p.work.offset(2 * b * c);
    let cfg = Launch::linear(ri as u32, threads_for(c, ROW_THREADS));
    let mut args = KernelArgs::new();
    args.arg(&kc).arg(&p.dy).arg(&p.x).arg(&p.gamma).arg(&p.g).arg(&p.mean).arg(&ri).arg(&ci).arg(&eps);
    // SAFETY: block r reads row r of dy, x, g, mean[r] and γ, and writes kc[r] (inside work).
    unsafe { run(dev, "grn_causal_coef_f32", cfg, &mut args) }?;
    let mut args = KernelArgs::new();
    args.arg(&p.dx).arg(&partial).arg(&p.dy).arg(&p.x).arg(&p.gamma).arg(&p.g).arg(&p.mean).arg(&kc);
    args.arg(&bi).arg(&ti).arg(&ci).arg(&eps);
    // SAFETY: thread (b, c) reads column (b, :, c) of dy, x, g, the row values mean/kc of
    // sequence b (kc written by the launch above, same stream), and writes dx[b, :, c] and
    // partial[b, c], partial[b, C + c].
    unsafe { run(dev, "grn_causal_backward_f32", Launch::cover(b * c, SCAN_THREADS), &mut args) }?;
    let mut args = KernelArgs::new();
    args.arg(&p.dgamma).arg(&p.dbeta).arg(&partial).arg(&bi).arg(&ci);
    // SAFETY: thread c sums partial[:, c] and partial[:, C + c] and updates dγ[c], dβ[c].
    unsafe { run(dev, "grn_param_grad_f32", Launch::cover(c, 128), &mut args) }
}

/// The device buffers of one causal GRN decode step (R rows, B cached sequences, C).
#[derive(Clone, Copy, Debug)]
struct GrnCausalStep {
    /// out (R,C), written.
    pub out: DevPtr,
    /// Running sums of squares (B,C), updated.
    pub sumsq: DevPtr,
    /// Workspace of R·C + R f32 (the rows' norms and means), overwritten.
    pub work: DevPtr,
    /// x (R,C).
    pub x: DevPtr,
    /// Cache sequence of each row (R u32).
    pub seq: DevPtr,
    /// γ (C).
    pub gamma: DevPtr,
    /// β (C).
    pub beta: DevPtr,
}

/// `grn_step_norms_f32` (one thread per channel walks the rows in order) then
/// `grn_rows_apply_f32` over the R rows.
///
/// # Safety
/// Every pointer of `p` must address device memory of the extent its field names; out,
/// sumsq and work must not overlap each other or the inputs.
unsafe fn grn_causal_step<L: Launcher>(dev: &L, p: &GrnCausalStep, s: GrnStepShape, b: usize) -> Result<(), L::Error> {
    let GrnStepShape { rows, c, eps } = s;
    if rows * c == 0 {
        return Ok(());
    }
    let (ri, bi, ci) = (dim("R", rows), dim("B", b), dim("C", c));
    let g = p.work;
    let mean = p.work.offset(rows * c);
    let mut args = KernelArgs::new();
    args.arg(&g).arg(&p.sumsq).arg(&p.x).arg(&p.seq).arg(&ri).arg(&bi).arg(&ci);
    // SAFETY: thread c reads column c of x, all of seq, and updates column c of sumsq (rows
    // with seq ≥ B are skipped) and of g (inside work).
    unsafe { run(dev, "grn_step_norms_f32", Launch::cover(c, SCAN_THREADS), &mut args) }?;
    // SAFETY: as rows_apply, over R rows of the norms just written (same stream).
    unsafe { rows_apply(dev, [p.out, mean], [g, p.x, p.gamma, p.beta], (ri, ci, eps)) }
}

impl<D: Device> GrnOps for KernelBackend<D> {
    fn grn_causal_forward(
        &self,
        out: &mut DeviceBuf<D>,
        stats: GrnCausalStats<&mut DeviceBuf<D>>,
        x: &DeviceBuf<D>,
        p: GrnParams<&DeviceBuf<D>>,
        s: GrnShape,
    ) {
        let GrnShape { b, t, c, .. } = s;
        let shapes = format!("B={b}, T={t}, C={c}");
        let GrnCausalStats { g, mean } = stats;
        let sizes = [out.len, g.len, mean.len, x.len, p.gamma.len, p.beta.len];
        assert_eq!(
            sizes,
            [b * t * c, b * t * c, b * t, b * t * c, c, c],
            "grn_causal_forward ({shapes}): buffer sizes"
        );
        let ptrs = GrnCausalForward {
            out: self.ptr32_mut(out),
            g: self.ptr32_mut(g),
            mean: self.ptr32_mut(mean),
            x: self.ptr32(x),
            gamma: self.ptr32(p.gamma),
            beta: self.ptr32(p.beta),
        };
        // SAFETY: every buffer holds the extent its field names (checked above); the three
        // outputs are distinct allocations (three &mut), not the inputs.
        let res = unsafe { grn_causal_forward(&*self.dev, &ptrs, s) };
        self.ok("grn_causal_forward", &shapes, res);
    }

    fn grn_causal_backward(
        &self,
        dx: &mut DeviceBuf<D>,
        dp: GrnParams<&mut DeviceBuf<D>>,
        dy: &DeviceBuf<D>,
        x: &DeviceBuf<D>,
        gamma: &DeviceBuf<D>,
        stats: GrnCausalStats<&DeviceBuf<D>>,
        s: GrnShape,
    ) {
        let GrnShape { b, t, c, .. } = s;
        let shapes = format!("B={b}, T={t}, C={c}");
        let (btc, bt) = (b * t * c, b * t);
        let GrnCausalStats { g, mean } = stats;
        let sizes = [dx.len, dp.gamma.len, dp.beta.len, dy.len, x.len, gamma.len, g.len, mean.len];
        assert_eq!(sizes, [btc, c, c, btc, btc, c, btc, bt], "grn_causal_backward ({shapes}): buffer sizes");
        if btc == 0 {
            return;
        }
        let mut work = self.scratch("grn_causal_backward", causal_backward_workspace(b, t, c));
        let ptrs = GrnCausalBackward {
            dx: self.ptr32_mut(dx),
            dgamma: self.ptr32_mut(dp.gamma),
            dbeta: self.ptr32_mut(dp.beta),
            work: self.ptr32_mut(&mut work),
            dy: self.ptr32(dy),
            x: self.ptr32(x),
            gamma: self.ptr32(gamma),
            g: self.ptr32(g),
            mean: self.ptr32(mean),
        };
        // SAFETY: sizes checked above, the workspace holds causal_backward_workspace(B, T, C)
        // f32; the four written buffers are distinct allocations, not the inputs.
        let res = unsafe { grn_causal_backward(&*self.dev, &ptrs, s) };
        self.ok("grn_causal_backward", &shapes, res);
    }

    fn grn_causal_step(
        &self,
        out: &mut DeviceBuf<D>,
        sumsq: &mut DeviceBuf<D>,
        x: &DeviceBuf<D>,
        seq: &DeviceBuf<D>,
        p: GrnParams<&DeviceBuf<D>>,
        s: GrnStepShape,
    ) {
        let GrnStepShape { rows, c, .. } = s;
        let shapes = format!("R={rows}, C={c}");
        let b = sumsq.len.checked_div(c).unwrap_or(0);
        // seq stays on the device (as for attention_cached): a row whose sequence is out of
        // range gets NaN outputs from the kernel instead of a write outside the sums.
        let sizes = [out.len, x.len, seq.len, p.gamma.len, p.beta.len, sumsq.len];
        assert_eq!(sizes, [rows * c, rows * c, rows, c, c, b * c], "grn_causal_step ({shapes}): buffer sizes");
        if rows * c == 0 {
            return;
        }
        let mut work = self.scratch("grn_causal_step", rows * c + rows);
        let ptrs = GrnCausalStep {
            out: self.ptr32_mut(out),
            sumsq: self.ptr32_mut(sumsq),
            work: self.ptr32_mut(&mut work),
            x: self.ptr32(x),
            seq: self.ptr32(seq),
            gamma: self.ptr32(p.gamma),
            beta: self.ptr32(p.beta),
        };
        // SAFETY: sizes checked above, the workspace holds R·C + R f32; out, sumsq and the
        // workspace are distinct allocations, not the inputs.
        let res = unsafe { grn_causal_step(&*self.dev, &ptrs, s, b) };
        self.ok("grn_causal_step", &shapes, res);
    }

    fn grn_sequence_forward(
        &self,
        out: &mut DeviceBuf<D>,
        stats: GrnSeqStats<&mut DeviceBuf<D>>,
        input: Masked<&DeviceBuf<D>>,
        p: GrnParams<&DeviceBuf<D>>,
        s: GrnShape,
    ) {
        let GrnShape { b, t, c, .. } = s;
        let shapes = format!("B={b}, T={t}, C={c}");
        let (GrnSeqStats { g, mean, n }, Masked { x, mask }) = (stats, input);
        let sizes = [out.len, x.len, mask.len, p.gamma.len, p.beta.len, g.len, mean.len, n.len];
        assert_eq!(
            sizes,
            [b * t * c, b * t * c, b * t, c, c, b * c, b, b * c],
            "grn_sequence_forward ({shapes}): buffer sizes"
        );
        let ptrs = GrnForward {
            out: self.ptr32_mut(out),
            g: self.ptr32_mut(g),
            mean: self.ptr32_mut(mean),
            n: self.ptr32_mut(n),
            x: self.ptr32(x),
            mask: self.ptr32(mask),
            gamma: self.ptr32(p.gamma),
            beta: self.ptr32(p.beta),
        };
        // SAFETY: every buffer holds the extent its field names for (b, t, c) (checked above);
        // the outputs are distinct allocations from each other and from the inputs.
        let res = unsafe { grn_forward(&*self.dev, &ptrs, s) };
        self.ok("grn_sequence_forward", &shapes, res);
        if b * t * c == 0 {
            // The kernel launches nothing then; the statistics are defined as zero, as the
            // oracle writes them.
            for buf in [g, mean, n] {
                self.zero(buf);
            }
        }
    }

    fn grn_sequence_backward(
        &self,
        dx: &mut DeviceBuf<D>,
        dp: GrnParams<&mut DeviceBuf<D>>,
        dy: &DeviceBuf<D>,
        input: Masked<&DeviceBuf<D>>,
        gamma: &DeviceBuf<D>,
        stats: GrnSeqStats<&DeviceBuf<D>>,
        s: GrnShape,
    ) {
        let GrnShape { b, t, c, .. } = s;
        let shapes = format!("B={b}, T={t}, C={c}");
        let (GrnSeqStats { g, mean, n }, Masked { x, mask }) = (stats, input);
        let sizes = [dx.len, dp.gamma.len, dp.beta.len, dy.len, x.len, mask.len, gamma.len, g.len, mean.len, n.len];
        assert_eq!(
            sizes,
            [b * t * c, c, c, b * t * c, b * t * c, b * t, c, b * c, b, b * c],
            "grn_sequence_backward ({shapes}): buffer sizes"
        );
        if b * t * c == 0 {
            return;
        }
        let mut partial = self.scratch("grn_sequence_backward", 2 * b * c);
        let ptrs = GrnBackward {
            dx: self.ptr32_mut(dx),
            dgamma: self.ptr32_mut(dp.gamma),
            dbeta: self.ptr32_mut(dp.beta),
            partial: self.ptr32_mut(&mut partial),
            dy: self.ptr32(dy),
            x: self.ptr32(x),
            mask: self.ptr32(mask),
            gamma: self.ptr32(gamma),
            g: self.ptr32(g),
            mean: self.ptr32(mean),
            n: self.ptr32(n),
        };
        // SAFETY: sizes checked above; partial holds 2·B·C; outputs are distinct allocations.
        let res = unsafe { grn_backward(&*self.dev, &ptrs, s) };
        self.ok("grn_sequence_backward", &shapes, res);
    }
}

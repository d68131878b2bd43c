//! GRN forward / backward (`kernels/grn.cu`), the device form of
//! [`crate::model::grn::grn_forward`] / [`crate::model::grn::grn_backward`].

use super::{dim, run, threads_for, DevPtr, Launcher};
use crate::backend::emu::{KernelArgs, Launch};

/// Largest block the GRN kernels use (one block per sequence, threads stride over C).
const MAX_THREADS: u32 = 256;

/// The device buffers of one GRN forward (shapes B, T, C).
#[derive(Clone, Copy, Debug)]
pub struct GrnForward {
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
pub struct GrnBackward {
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
pub unsafe fn grn_forward<L: Launcher>(
    dev: &L,
    p: &GrnForward,
    b: usize,
    t: usize,
    c: usize,
    eps: f32,
) -> Result<(), L::Error> {
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
pub unsafe fn grn_backward<L: Launcher>(
    dev: &L,
    p: &GrnBackward,
    b: usize,
    t: usize,
    c: usize,
    eps: f32,
) -> Result<(), L::Error> {
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

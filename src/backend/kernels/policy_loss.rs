//! The clipped-ratio policy loss with k3 KL and entropy bonus (`kernels/policy_loss.cu`), the
//! device form of [`crate::backend::Backend::policy_loss`]: S sequences × L tokens.

use super::{dim, run, threads_for, DevPtr, Launcher};
use crate::backend::emu::{KernelArgs, Launch};
use crate::backend::{IsLevel, LossType, PolicyLossParams};

/// f32 values of workspace [`policy_loss`] needs per sequence (16 partial sums + the scale).
pub const WORKSPACE_PER_SEQ: usize = 17;

/// The device buffers of one policy-loss call (S, L from the params).
#[derive(Clone, Copy, Debug)]
pub struct PolicyLossBufs {
    /// d loss / d logp (S, L), overwritten.
    pub dlogp: DevPtr,
    /// d loss / d entropy (S, L), overwritten.
    pub dentropy: DevPtr,
    /// The metrics ([`crate::backend::policy_metric::LEN`] f32), overwritten.
    pub metrics: DevPtr,
    /// [`WORKSPACE_PER_SEQ`]·S f32, overwritten.
    pub workspace: DevPtr,
    /// logp (S, L).
    pub logp: DevPtr,
    /// logp_old (S, L).
    pub logp_old: DevPtr,
    /// logp_ref (S, L), or `None` (not read when β = 0).
    pub logp_ref: Option<DevPtr>,
    /// advantages (S).
    pub advantages: DevPtr,
    /// entropy (S, L).
    pub entropy: DevPtr,
    /// mask (S, L).
    pub mask: DevPtr,
}

/// Three launches: per-sequence partials and unscaled gradients (one block per sequence),
/// the metrics and per-sequence scales (one block), the gradient scaling (elementwise).
///
/// # Safety
/// Every pointer must address the f32 count its field names for these S, L; the written
/// buffers (dlogp, dentropy, metrics, workspace) must not overlap each other or the inputs.
pub unsafe fn policy_loss<L: Launcher>(dev: &L, b: &PolicyLossBufs, p: &PolicyLossParams) -> Result<(), L::Error> {
    let (s, l) = (dim("S", p.s), dim("L", p.l));
    let level: i32 = match p.level {
        IsLevel::Token => 0,
        IsLevel::Sequence => 1,
    };
    let loss_type: i32 = match p.loss_type {
        LossType::Grpo => 0,
        LossType::Bnpo | LossType::Dapo => 1,
        LossType::DrGrpo => 2,
    };
    let use_kl = p.beta != 0.0;
    let use_ref = i32::from(use_kl && b.logp_ref.is_some());
    let missing_ref = i32::from(use_kl && b.logp_ref.is_none());
    let logp_ref = b.logp_ref.unwrap_or(DevPtr(0));
    let partial = b.workspace;
    let scale = DevPtr(b.workspace.0 + (16 * p.s * std::mem::size_of::<f32>()) as u64);
    let (eps_low, eps_high, beta, ent_coef) = (p.eps_low, p.eps_high, p.beta, p.entropy_coef);
    let mcl = dim("max_completion_length", p.max_completion_length);

    if p.s > 0 {
        let mut args = KernelArgs::new();
        args.arg(&b.dlogp).arg(&b.dentropy).arg(&partial).arg(&b.logp).arg(&b.logp_old).arg(&logp_ref);
        args.arg(&b.advantages).arg(&b.entropy).arg(&b.mask).arg(&s).arg(&l).arg(&level);
        args.arg(&eps_low).arg(&eps_high).arg(&beta).arg(&ent_coef).arg(&use_ref);
        // SAFETY: block i reads row i of the (S, L) inputs (logp_ref only when use_ref),
        // advantages[i], and writes row i of dlogp/dentropy and partial[i, 0..16].
        unsafe { run(dev, "policy_loss_partial_f32", Launch::linear(s as u32, threads_for(p.l, 256)), &mut args) }?;
    }
    let mut args = KernelArgs::new();
    args.arg(&b.metrics).arg(&scale).arg(&partial).arg(&b.advantages).arg(&s).arg(&l);
    args.arg(&loss_type).arg(&mcl).arg(&missing_ref);
    // SAFETY: one block reads partial (S·16) and advantages (S), writes metrics (16), scale (S).
    unsafe { run(dev, "policy_loss_finalize_f32", Launch::linear(1, threads_for(p.s.max(32), 256)), &mut args) }?;
    if p.s * p.l > 0 {
        let mut args = KernelArgs::new();
        args.arg(&b.dlogp).arg(&b.dentropy).arg(&scale).arg(&s).arg(&l);
        // SAFETY: thread j scales dlogp[j], dentropy[j] (j < S·L) by scale[j / L].
        unsafe { run(dev, "policy_loss_scale_f32", Launch::cover(p.s * p.l, 256), &mut args) }?;
    }
    Ok(())
}

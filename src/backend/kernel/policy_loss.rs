//! The GRPO-family policy loss with KL and entropy bonus (`kernels/policy_loss.cu`): S
//! sequences × L tokens, forward and gradient in three launches.

use super::{DeviceBuf, KernelBackend};
use crate::backend::device::Device;
use crate::backend::launch::{dim, run, threads_for, DevPtr, KernelArgs, Launch, Launcher};
use crate::backend::ops::PolicyLossOps;
use crate::backend::policy_loss::{policy_metric, IsLevel, KlEstimator, LossType, PolicyLossInputs, PolicyLossParams};

/// Partial sums per sequence (`PL_COLS` in the kernel).
const PARTIAL_COLS: usize = 18;

/// f32 values of workspace [`policy_loss`] needs per sequence: the partial sums, the gradient
/// scale c_i and the entropy-bonus scale.
const WORKSPACE_PER_SEQ: usize = PARTIAL_COLS + 2;

/// The device buffers of one policy-loss call (S, L from the params).
#[derive(Clone, Copy, Debug)]
struct PolicyLossBufs {
    /// d loss / d logp (S, L), overwritten.
    pub dlogp: DevPtr,
    /// d loss / d entropy (S, L), overwritten.
    pub dentropy: DevPtr,
    /// The metrics ([`policy_metric::LEN`] f32), overwritten.
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
/// Optional knobs travel as a flag plus a value (`use_delta`, `delta`, ...), so "off" never
/// depends on a sentinel value surviving arithmetic.
///
/// # Safety
/// Every pointer must address the f32 count its field names for these S, L; the written
/// buffers (dlogp, dentropy, metrics, workspace) must not overlap each other or the inputs.
unsafe fn policy_loss<L: Launcher>(dev: &L, b: &PolicyLossBufs, p: &PolicyLossParams) -> Result<(), L::Error> {
    let (s, l) = (dim("S", p.s), dim("L", p.l));
    let level: i32 = match p.level {
        IsLevel::Token => 0,
        IsLevel::Sequence => 1,
    };
    // The kernel's LT_* codes.
    let loss_type: i32 = match p.loss_type {
        LossType::Grpo => 0,
        LossType::Bnpo => 1,
        LossType::DrGrpo => 2,
        LossType::Dapo => 3,
        LossType::Cispo => 4,
        LossType::Sapo => 5,
        LossType::Luspo => 6,
        LossType::Vespo => 7,
    };
    let kl_est: i32 = match p.kl_estimator {
        KlEstimator::K1 => 1,
        KlEstimator::K2 => 2,
        KlEstimator::K3 => 3,
    };
    let use_kl = p.beta != 0.0;
    let use_ref = i32::from(use_kl && b.logp_ref.is_some());
    let missing_ref = i32::from(use_kl && b.logp_ref.is_none());
    let logp_ref = b.logp_ref.unwrap_or(DevPtr(0));
    let partial = b.workspace;
    let scale = b.workspace.offset(PARTIAL_COLS * p.s);
    let scale_h = scale.offset(p.s);
    let (eps_low, eps_high, beta, ent_coef) = (p.eps_low, p.eps_high, p.beta, p.entropy_coef);
    let (use_delta, delta) = (i32::from(p.delta.is_some()), p.delta.unwrap_or(0.0));
    let (use_dual, clip_c) = (i32::from(p.clip_ratio_c.is_some()), p.clip_ratio_c.unwrap_or(0.0));
    let bias_kl = i32::from(p.use_bias_correction_kl);
    let (use_ent_mask, ent_threshold) = (i32::from(p.entropy_threshold.is_some()), p.entropy_threshold.unwrap_or(0.0));
    let (tau_pos, tau_neg) = (p.sapo_temperature_pos, p.sapo_temperature_neg);
    let (k_pos, l_pos, k_neg, l_neg) = (p.vespo_k_pos, p.vespo_lambda_pos, p.vespo_k_neg, p.vespo_lambda_neg);
    let (seq_norm, token_norm, accum) = (p.seq_norm, p.token_norm, p.accum);
    let mcl = dim("max_completion_length", p.max_completion_length);

    if p.s > 0 {
        let mut args = KernelArgs::new();
        args.arg(&b.dlogp).arg(&b.dentropy).arg(&partial).arg(&b.logp).arg(&b.logp_old).arg(&logp_ref);
        args.arg(&b.advantages).arg(&b.entropy).arg(&b.mask).arg(&s).arg(&l).arg(&level).arg(&loss_type);
        args.arg(&eps_low).arg(&eps_high).arg(&use_delta).arg(&delta).arg(&use_dual).arg(&clip_c);
        args.arg(&beta).arg(&kl_est).arg(&bias_kl).arg(&use_ref).arg(&use_ent_mask).arg(&ent_threshold);
        args.arg(&tau_pos).arg(&tau_neg).arg(&k_pos).arg(&l_pos).arg(&k_neg).arg(&l_neg);
        // SAFETY: block i reads row i of the (S, L) inputs (logp_ref only when use_ref),
        // advantages[i], and writes row i of dlogp/dentropy and partial[i, 0..PARTIAL_COLS].
        unsafe { run(dev, "policy_loss_partial_f32", Launch::linear(s as u32, threads_for(p.l, 256)), &mut args) }?;
    }
    let mut args = KernelArgs::new();
    args.arg(&b.metrics).arg(&scale).arg(&scale_h).arg(&partial).arg(&b.advantages).arg(&s).arg(&l);
    args.arg(&level).arg(&loss_type).arg(&mcl).arg(&seq_norm).arg(&token_norm).arg(&accum).arg(&ent_coef);
    args.arg(&missing_ref);
    // SAFETY: one block of ≥ 32 threads (≥ PARTIAL_COLS, one per column) reads partial
    // (S·PARTIAL_COLS) and advantages (S), writes metrics (LEN), scale and scale_h (S each),
    // all inside the workspace of WORKSPACE_PER_SEQ·S values.
    unsafe { run(dev, "policy_loss_finalize_f32", Launch::linear(1, threads_for(p.s.max(32), 256)), &mut args) }?;
    if p.s * p.l > 0 {
        let mut args = KernelArgs::new();
        args.arg(&b.dlogp).arg(&b.dentropy).arg(&scale).arg(&scale_h).arg(&s).arg(&l);
        // SAFETY: thread j scales dlogp[j], dentropy[j] (j < S·L) by scale[j / L], scale_h[j / L].
        unsafe { run(dev, "policy_loss_scale_f32", Launch::cover(p.s * p.l, 256), &mut args) }?;
    }
    Ok(())
}

impl<D: Device> PolicyLossOps for KernelBackend<D> {
    fn policy_loss(
        &self,
        dlogp: &mut DeviceBuf<D>,
        dentropy: &mut DeviceBuf<D>,
        metrics: &mut DeviceBuf<D>,
        inputs: PolicyLossInputs<'_, Self>,
        params: PolicyLossParams,
    ) {
        let (s, l) = (params.s, params.l);
        let shapes = format!("S={s}, L={l}");
        let PolicyLossInputs { logp, logp_old, logp_ref, advantages, entropy, mask } = inputs;
        let sl = s * l;
        let ok = l > 0
            && [dlogp.len, dentropy.len, logp.len, logp_old.len, entropy.len, mask.len].iter().all(|&n| n == sl)
            && logp_ref.map_or(true, |r| r.len == sl)
            && advantages.len == s
            && metrics.len == policy_metric::LEN;
        assert!(ok, "policy_loss ({shapes}): buffer sizes do not match");
        let mut workspace = self.scratch("policy_loss", WORKSPACE_PER_SEQ * s.max(1));
        let bufs = PolicyLossBufs {
            dlogp: self.ptr32_mut(dlogp),
            dentropy: self.ptr32_mut(dentropy),
            metrics: self.ptr32_mut(metrics),
            workspace: self.ptr32_mut(&mut workspace),
            logp: self.ptr32(logp),
            logp_old: self.ptr32(logp_old),
            logp_ref: logp_ref.map(|r| self.ptr32(r)),
            advantages: self.ptr32(advantages),
            entropy: self.ptr32(entropy),
            mask: self.ptr32(mask),
        };
        // SAFETY: sizes checked above, the workspace holds WORKSPACE_PER_SEQ·S f32, and the
        // three outputs are distinct allocations from each other and from the inputs.
        let r = unsafe { policy_loss(&*self.dev, &bufs, &params) };
        self.ok("policy_loss", &shapes, r);
    }
}

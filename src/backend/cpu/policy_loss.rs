//! The GRPO-family policy loss (TRL 1.16's `GRPOTrainer._compute_loss`, plus verl's dual clip
//! and KL estimators), forward and gradient in one pass over S sequences × L tokens. This is
//! the oracle the device kernel (`kernels/policy_loss.cu`) is compared with.
//!
//! Per valid token t (m_t finite, ≥ 0 and ≠ 0) of sequence i, with advantage A = A_i,
//! lr_t = logp_t − logp_old_t and cnt_i = Σ_t m_t:
//! - ρ = exp(lr_t) (token level) or exp(Σ_t m_t lr_t / max(cnt_i, 1)) (sequence level, GSPO);
//! - the policy term p_t ([`LossType`]): the clip family −min(min(ρ, δ)·A, clip(ρ, 1−ε_low,
//!   1+ε_high)·A), capped at −A·c for A < 0 (verl's dual clip); cispo −sg(min(ρ, ε_high))·A·logp;
//!   sapo −sigmoid(τ(ρ−1))·(4/τ)·A; vespo −sg(φ_i)·A·logp with TRL's gamma weight φ_i;
//! - the entropy mask e_t = [H_t ≥ θ] multiplies p_t (not the KL);
//! - K_t = ρ·k_t (bias correction) or k_t, k_t by [`KlEstimator`] on d = logp_ref − logp;
//! - loss = Σ_i Σ_t c_i m_t (e_t p_t + β K_t) − c_H Σ m e H / (accum·max(Σ m e, 1)).
//!
//! Gradients follow torch's rules for the same expressions: torch.min passes the gradient to
//! the smaller argument (half to each on a tie), clamp passes it inside its closed range, the
//! `sg` (detached) factors pass none. ∂ρ/∂logp_t = ρ (token) or ρ·m_t/max(cnt_i, 1) for every
//! valid token of the sequence (sequence level: the per-token ∂ℓ/∂ρ terms are summed and then
//! spread).
//!
//! Sequences run in parallel; each returns its partial sums (f64), which are then added in
//! sequence order, so the result does not depend on scheduling.

use super::CpuBackend;
use crate::backend::ops::PolicyLossOps;
use crate::backend::policy_loss::{
    policy_metric as pm, IsLevel, KlEstimator, LossType, PolicyLossInputs, PolicyLossParams,
};
use rayon::prelude::*;

/// The per-token inputs as host slices (see [`crate::backend::PolicyLossInputs`]).
struct Inputs<'a> {
    pub logp: &'a [f32],
    pub logp_old: &'a [f32],
    pub logp_ref: Option<&'a [f32]>,
    pub advantages: &'a [f32],
    pub entropy: &'a [f32],
    pub mask: &'a [f32],
}

/// One sequence's contribution to the loss and the metrics.
#[derive(Default)]
struct SeqSums {
    /// Σ m e p (unscaled by c_i).
    policy: f64,
    /// Σ m β K.
    kl_loss: f64,
    /// Σ m e H: the entropy bonus's numerator.
    ent_masked: f64,
    kl: f64,
    ent: f64,
    clip_low: f64,
    clip_high: f64,
    dual: f64,
    ratio: f64,
    ratio_min: f32,
    ratio_max: f32,
    bad_logp: f64,
    bad_old: f64,
    bad_ref: f64,
}

fn good(m: f32) -> bool {
    m.is_finite() && m >= 0.0
}

/// A mask weight that takes part in the loss.
fn on(m: f32) -> bool {
    m != 0.0 && good(m)
}

/// One token's policy term: its value, ∂/∂ρ and ∂/∂logp (the part not through ρ), and
/// whether the dual clip's cap is what it took.
struct Term {
    value: f64,
    d_rho: f64,
    d_logp: f64,
    dual: bool,
}

/// The policy term p_t of one token (before the entropy mask). `r` is ρ, `phi` the sequence's
/// vespo weight.
fn policy_term(p: &PolicyLossParams, r: f64, a: f64, logp: f64, phi: f64) -> Term {
    let (lo, hi) = (f64::from(1.0 - p.eps_low), f64::from(1.0 + p.eps_high));
    match p.loss_type {
        LossType::Grpo | LossType::Bnpo | LossType::DrGrpo | LossType::Dapo | LossType::Luspo => {
            // max-then-min as torch.clamp does (no panic on lo > hi).
            let c2 = r.max(lo).min(hi);
            let (rt, d_rt) = match p.delta.map(f64::from) {
                Some(d) if r > d => (d, 0.0),
                _ => (r, 1.0),
            };
            let d_c2 = if (lo..=hi).contains(&r) { 1.0 } else { 0.0 };
            let (v1, v2) = (rt * a, c2 * a);
            // −min(v1, v2) with torch.min's gradient.
            let (mut value, mut d_rho) = if v1 < v2 {
                (-v1, -a * d_rt)
            } else if v2 < v1 {
                (-v2, -a * d_c2)
            } else {
                (-v1, -a * 0.5 * (d_rt + d_c2))
            };
            let mut dual = false;
            if let Some(c) = p.clip_ratio_c.filter(|_| a < 0.0) {
                // verl: min(−A·c, p); −A·c does not depend on ρ.
                let cap = -a * f64::from(c);
                if value > cap {
                    (value, d_rho, dual) = (cap, 0.0, true);
                } else if value == cap {
                    d_rho *= 0.5;
                }
            }
            Term { value, d_rho, d_logp: 0.0, dual }
        }
        LossType::Cispo => {
            let capped = r.min(f64::from(p.eps_high));
            Term { value: -capped * a * logp, d_rho: 0.0, d_logp: -capped * a, dual: false }
        }
        LossType::Sapo => {
            let tau = f64::from(if a > 0.0 { p.sapo_temperature_pos } else { p.sapo_temperature_neg });
            let sig = 1.0 / (1.0 + (-tau * (r - 1.0)).exp());
            Term { value: -sig * 4.0 / tau * a, d_rho: -4.0 * sig * (1.0 - sig) * a, d_logp: 0.0, dual: false }
        }
        LossType::Vespo => Term { value: -phi * a * logp, d_rho: 0.0, d_logp: -phi * a, dual: false },
    }
}

/// TRL's `get_gamma_weights` for one sequence (no vLLM ratio): φ = exp(λ + k·lw − λ·e^lw) with
/// lw the clamped sum of the clamped token log-ratios `seq_log_ratio`; non-finite → 0.
pub(crate) fn vespo_phi(p: &PolicyLossParams, seq_log_ratio: f64, a: f64) -> f64 {
    let lw = seq_log_ratio.clamp(1e-8f64.ln(), 20.0);
    let (k, lambda) = if a >= 0.0 { (p.vespo_k_pos, p.vespo_lambda_pos) } else { (p.vespo_k_neg, p.vespo_lambda_neg) };
    let lambda = f64::from(lambda).max(1e-4);
    let phi = (lambda + f64::from(k) * lw - lambda * lw.exp()).exp();
    if phi.is_finite() {
        phi
    } else {
        0.0
    }
}

/// The KL estimator k(d) and ∂k/∂logp, d = logp_ref − logp.
fn kl_term(est: KlEstimator, d: f64) -> (f64, f64) {
    match est {
        // e^d − d − 1 through expm1: keeps its relative accuracy for small d.
        KlEstimator::K3 => {
            let em1 = d.exp_m1();
            (em1 - d, -em1)
        }
        KlEstimator::K2 => (0.5 * d * d, -d),
        KlEstimator::K1 => (-d, 1.0),
    }
}

/// Writes `dlogp`, `dentropy` (S·L) and `metrics` ([`pm::LEN`]).
fn policy_loss(dlogp: &mut [f32], dentropy: &mut [f32], metrics: &mut [f32], x: Inputs<'_>, p: PolicyLossParams) {
    let (s, l) = (p.s, p.l);
    let use_kl = p.beta != 0.0;
    let logp_ref = if use_kl { x.logp_ref } else { None };
    let beta = f64::from(p.beta);
    let keep = |h: f32| p.entropy_threshold.map_or(true, |th| h >= th);
    // Phase 1: per sequence the mask count and the entropy-masked count (masked-out or invalid
    // weights count as 0).
    let counts: Vec<(f64, f64)> = x
        .mask
        .par_chunks(l)
        .zip(x.entropy.par_chunks(l))
        .map(|(row, ent)| {
            let cnt = row.iter().filter(|&&m| good(m)).map(|&m| f64::from(m)).sum::<f64>();
            let ecnt = row.iter().zip(ent).filter(|(&m, &h)| on(m) && keep(h)).map(|(&m, _)| f64::from(m)).sum();
            (cnt, ecnt)
        })
        .collect();
    let bad_mask = x.mask.iter().filter(|&&m| !good(m)).count();
    let bad_adv = x.advantages.iter().filter(|a| !a.is_finite()).count();
    let total: f64 = counts.iter().map(|c| c.0).sum();
    let etotal: f64 = counts.iter().map(|c| c.1).sum();
    // The normalisers (≤ 0 or NaN: this call alone).
    let seq_norm = if p.seq_norm > 0.0 { f64::from(p.seq_norm) } else { s as f64 };
    let token_norm = if p.token_norm > 0.0 { f64::from(p.token_norm) } else { total };
    let accum = f64::from(p.accum).max(1.0);
    let scale = |cnt: f64| -> f64 {
        match p.loss_type {
            LossType::Grpo | LossType::Sapo => 1.0 / (seq_norm * cnt.max(1.0)),
            LossType::Luspo => 1.0 / seq_norm,
            LossType::Bnpo => 1.0 / (accum * total.max(1.0)),
            LossType::Dapo | LossType::Cispo | LossType::Vespo => 1.0 / token_norm.max(1.0),
            LossType::DrGrpo => 1.0 / (seq_norm * p.max_completion_length.max(1) as f64),
        }
    };
    // The entropy bonus is a mean over the entropy-masked tokens, whatever the loss type.
    let ent_c = f64::from(p.entropy_coef) / (accum * etotal.max(1.0));
    let (lo, hi) = (1.0 - p.eps_low, 1.0 + p.eps_high);
    let seq_level = p.level == IsLevel::Sequence;
    // Phase 2: per sequence, the loss terms, the gradients and the metric sums.
    let sums: Vec<SeqSums> = dlogp
        .par_chunks_mut(l)
        .zip(dentropy.par_chunks_mut(l))
        .enumerate()
        .map(|(i, (dlp, dh))| {
            let r = i * l..(i + 1) * l;
            let (lp, lpo, ent, mask) =
                (&x.logp[r.clone()], &x.logp_old[r.clone()], &x.entropy[r.clone()], &x.mask[r.clone()]);
            let lpr = logp_ref.map(|v| &v[r]);
            let a = x.advantages[i];
            let a64 = f64::from(a);
            let (cnt, c) = (counts[i].0, scale(counts[i].0));
            let valid = || (0..l).filter(|&t| on(mask[t]));
            let mut out = SeqSums { ratio_min: f32::INFINITY, ratio_max: f32::NEG_INFINITY, ..Default::default() };
            // Sequence-level ratio: exp of the masked mean log-ratio.
            let seq_ratio = if seq_level {
                let sum: f64 = valid().map(|t| f64::from(mask[t]) * f64::from(lp[t] - lpo[t])).sum();
                ((sum / cnt.max(1.0)) as f32).exp()
            } else {
                1.0
            };
            let phi = if p.loss_type == LossType::Vespo {
                let sum: f64 =
                    valid().map(|t| f64::from(mask[t]) * f64::from((lp[t] - lpo[t]).clamp(-20.0, 20.0))).sum();
                vespo_phi(&p, sum, a64)
            } else {
                0.0
            };
            // The clip fractions flag ρ̃ = min(ρ, δ) (clip family) or ρ (cispo) with A's sign.
            let flags = |rho: f32| -> (bool, bool) {
                match p.loss_type {
                    LossType::Cispo => (false, a > 0.0 && rho > p.eps_high),
                    LossType::Sapo | LossType::Vespo => (false, false),
                    _ => {
                        let rt = p.delta.map_or(rho, |d| rho.min(d));
                        (a < 0.0 && rt < lo, a > 0.0 && rt > hi)
                    }
                }
            };
            if seq_level {
                // TRL averages one value per sequence over all S (padding sequences included).
                let (low, high) = flags(seq_ratio);
                out.clip_low = f64::from(u8::from(low));
                out.clip_high = f64::from(u8::from(high));
            }
            // Σ_t ∂loss/∂ρ·ρ over the sequence, spread over its tokens afterwards (sequence level).
            let mut seq_grad = 0.0f64;
            for t in 0..l {
                dlp[t] = 0.0;
                dh[t] = 0.0;
                let m = mask[t];
                if !on(m) {
                    continue;
                }
                let m64 = f64::from(m);
                out.bad_logp += f64::from(u8::from(!lp[t].is_finite()));
                out.bad_old += f64::from(u8::from(!lpo[t].is_finite()));
                let w = m64 * c;
                let rho = if seq_level { seq_ratio } else { (lp[t] - lpo[t]).exp() };
                let r64 = f64::from(rho);
                let e = if keep(ent[t]) { 1.0 } else { 0.0 };
                let term = policy_term(&p, r64, a64, f64::from(lp[t]), phi);
                // ∂loss/∂ρ and the direct ∂loss/∂logp of this token, both still without c.
                let mut d_rho = e * term.d_rho;
                let mut g = e * term.d_logp;
                out.policy += w * e * term.value;
                if let Some(lpr) = lpr {
                    out.bad_ref += f64::from(u8::from(!lpr[t].is_finite()));
                    let (k, dk) = kl_term(p.kl_estimator, f64::from(lpr[t] - lp[t]));
                    let (kl, dkl) = if p.use_bias_correction_kl { (r64 * k, r64 * dk) } else { (k, dk) };
                    if p.use_bias_correction_kl {
                        d_rho += beta * k;
                    }
                    out.kl += m64 * kl;
                    out.kl_loss += w * beta * kl;
                    g += beta * dkl;
                }
                match p.level {
                    IsLevel::Token => g += d_rho * r64,
                    IsLevel::Sequence => seq_grad += w * d_rho * r64,
                }
                dlp[t] = (w * g) as f32;
                out.ent += m64 * f64::from(ent[t]);
                out.ent_masked += m64 * e * f64::from(ent[t]);
                dh[t] = (-ent_c * m64 * e) as f32;
                if !seq_level {
                    let (low, high) = flags(rho);
                    out.clip_low += if low { m64 } else { 0.0 };
                    out.clip_high += if high { m64 } else { 0.0 };
                }
                out.dual += if term.dual { m64 } else { 0.0 };
                out.ratio += m64 * r64;
                out.ratio_min = out.ratio_min.min(rho);
                out.ratio_max = out.ratio_max.max(rho);
            }
            if seq_level && seq_grad != 0.0 {
                let per = seq_grad / cnt.max(1.0);
                for t in valid() {
                    dlp[t] = (f64::from(dlp[t]) + per * f64::from(mask[t])) as f32;
                }
            }
            out
        })
        .collect();
    let mut acc = SeqSums { ratio_min: f32::INFINITY, ratio_max: f32::NEG_INFINITY, ..Default::default() };
    for q in &sums {
        acc.policy += q.policy;
        acc.kl_loss += q.kl_loss;
        acc.ent_masked += q.ent_masked;
        acc.kl += q.kl;
        acc.ent += q.ent;
        acc.clip_low += q.clip_low;
        acc.clip_high += q.clip_high;
        acc.dual += q.dual;
        acc.ratio += q.ratio;
        acc.ratio_min = acc.ratio_min.min(q.ratio_min);
        acc.ratio_max = acc.ratio_max.max(q.ratio_max);
        acc.bad_logp += q.bad_logp;
        acc.bad_old += q.bad_old;
        acc.bad_ref += q.bad_ref;
    }
    let mean = |v: f64| if total > 0.0 { (v / total) as f32 } else { 0.0 };
    let clip_mean = |v: f64| if seq_level { (v / s.max(1) as f64) as f32 } else { mean(v) };
    metrics.fill(0.0);
    metrics[pm::LOSS] = (acc.policy + acc.kl_loss - ent_c * acc.ent_masked) as f32;
    metrics[pm::POLICY_LOSS] = acc.policy as f32;
    metrics[pm::KL_MEAN] = mean(acc.kl);
    metrics[pm::ENTROPY_MEAN] = mean(acc.ent);
    metrics[pm::CLIP_FRAC_LOW] = clip_mean(acc.clip_low);
    metrics[pm::CLIP_FRAC_HIGH] = clip_mean(acc.clip_high);
    metrics[pm::DUAL_CLIP_FRAC] = mean(acc.dual);
    metrics[pm::RATIO_MEAN] = mean(acc.ratio);
    metrics[pm::RATIO_MIN] = if total > 0.0 { acc.ratio_min } else { 0.0 };
    metrics[pm::RATIO_MAX] = if total > 0.0 { acc.ratio_max } else { 0.0 };
    metrics[pm::MASK_SUM] = total as f32;
    metrics[pm::BAD_LOGP] = acc.bad_logp as f32;
    metrics[pm::BAD_LOGP_OLD] = acc.bad_old as f32;
    metrics[pm::BAD_LOGP_REF] = if use_kl && x.logp_ref.is_none() { (s * l) as f32 } else { acc.bad_ref as f32 };
    metrics[pm::BAD_ADVANTAGE] = bad_adv as f32;
    metrics[pm::BAD_MASK] = bad_mask as f32;
    metrics[pm::BAD_ENTROPY] = (0..s * l).filter(|&t| on(x.mask[t]) && !x.entropy[t].is_finite()).count() as f32;
}

impl PolicyLossOps for CpuBackend {
    fn policy_loss(
        &self,
        dlogp: &mut Vec<f32>,
        dentropy: &mut Vec<f32>,
        metrics: &mut Vec<f32>,
        inputs: PolicyLossInputs<'_, Self>,
        params: PolicyLossParams,
    ) {
        let sl = params.s * params.l;
        let PolicyLossInputs { logp, logp_old, logp_ref, advantages, entropy, mask } = inputs;
        assert!(
            params.l > 0
                && [dlogp.len(), dentropy.len(), logp.len(), logp_old.len(), entropy.len(), mask.len()]
                    .iter()
                    .all(|&n| n == sl)
                && logp_ref.map_or(true, |r| r.len() == sl)
                && advantages.len() == params.s
                && metrics.len() == pm::LEN,
            "policy_loss: buffer sizes do not match S={} L={}",
            params.s,
            params.l
        );
        let x = Inputs { logp, logp_old, logp_ref: logp_ref.map(|r| r.as_slice()), advantages, entropy, mask };
        self.run(|| policy_loss(dlogp, dentropy, metrics, x, params));
    }
}

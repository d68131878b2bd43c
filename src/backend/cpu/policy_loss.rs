//! The clipped-ratio policy loss with k3 KL and an entropy bonus (TRL's GRPO/DAPO loss),
//! forward and gradient in one pass over S sequences × L tokens.
//!
//! Per masked token t of sequence i, with advantage A = A_i:
//! - ρ = exp(logp_t − logp_old_t) (token level) or exp(Σ_t m_t(logp_t − logp_old_t)/max(Σ_t m_t, 1))
//!   (sequence level, GSPO, shared by the sequence's tokens);
//! - ℓ_t = −min(ρA, clip(ρ, 1−ε_low, 1+ε_high)A) + β·(e^d − d − 1) − c_H·H_t, d = logp_ref_t − logp_t;
//! - loss = Σ_i Σ_t w_it ℓ_t with w_it = m_it / (S·max(Σ_t m_it, 1)) (grpo),
//!   m_it / max(Σ m, 1) (bnpo, dapo) or m_it / (S·max_completion_length) (dr_grpo).
//!
//! Gradients: ∂(−min(..))/∂ρ is 0 where the clipped branch is active and out of range
//! (A > 0, ρ > 1+ε_high or A < 0, ρ < 1−ε_low), −A elsewhere; ∂ρ/∂logp_t = ρ (token) or
//! ρ·m_t/max(Σ m, 1) (sequence); ∂KL/∂logp_t = 1 − e^d; ∂ℓ/∂H_t = −c_H.
//!
//! Sequences run in parallel; each returns its partial sums (f64), which are then added in
//! sequence order, so the result does not depend on scheduling.

use crate::backend::{policy_metric as pm, IsLevel, LossType, PolicyLossParams};
use rayon::prelude::*;

/// The per-token inputs as host slices (see [`crate::backend::PolicyLossInputs`]).
pub struct Inputs<'a> {
    pub logp: &'a [f32],
    pub logp_old: &'a [f32],
    pub logp_ref: Option<&'a [f32]>,
    pub advantages: &'a [f32],
    pub entropy: &'a [f32],
    pub mask: &'a [f32],
}

/// One sequence's contribution to the metrics.
#[derive(Default)]
struct SeqSums {
    policy: f64,
    kl_loss: f64,
    ent_loss: f64,
    kl: f64,
    ent: f64,
    clip_low: f64,
    clip_high: f64,
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

/// Writes `dlogp`, `dentropy` (S·L) and `metrics` ([`pm::LEN`]).
pub fn policy_loss(dlogp: &mut [f32], dentropy: &mut [f32], metrics: &mut [f32], x: Inputs<'_>, p: PolicyLossParams) {
    let PolicyLossParams { s, l, loss_type, level, eps_low, eps_high, beta, entropy_coef, max_completion_length } = p;
    let use_kl = beta != 0.0;
    let logp_ref = if use_kl { x.logp_ref } else { None };
    // Phase 1: mask counts per sequence (masked-out or invalid weights count as 0).
    let counts: Vec<f64> =
        x.mask.par_chunks(l).map(|row| row.iter().filter(|&&m| good(m)).map(|&m| m as f64).sum::<f64>()).collect();
    let bad_mask = x.mask.iter().filter(|&&m| !good(m)).count();
    let bad_adv = x.advantages.iter().filter(|a| !a.is_finite()).count();
    let total: f64 = counts.iter().sum();
    let scale = |cnt: f64| -> f64 {
        match loss_type {
            LossType::Grpo => 1.0 / (s as f64 * cnt.max(1.0)),
            LossType::Bnpo | LossType::Dapo => 1.0 / total.max(1.0),
            LossType::DrGrpo => 1.0 / (s as f64 * max_completion_length.max(1) as f64),
        }
    };
    let (lo, hi) = (1.0 - eps_low, 1.0 + eps_high);
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
            let (cnt, c) = (counts[i], scale(counts[i]));
            let on = |m: f32| m != 0.0 && good(m);
            let mut out = SeqSums { ratio_min: f32::INFINITY, ratio_max: f32::NEG_INFINITY, ..Default::default() };
            // Sequence-level ratio: exp of the masked mean log-ratio.
            let seq_ratio = match level {
                IsLevel::Token => 1.0,
                IsLevel::Sequence => {
                    let sum: f64 =
                        (0..l).filter(|&t| on(mask[t])).map(|t| mask[t] as f64 * (lp[t] - lpo[t]) as f64).sum();
                    ((sum / cnt.max(1.0)) as f32).exp()
                }
            };
            // Σ_t w_t·ρ·∂(−min)/∂ρ, spread over the tokens afterwards at sequence level.
            let mut seq_grad = 0.0f64;
            for t in 0..l {
                dlp[t] = 0.0;
                dh[t] = 0.0;
                let m = mask[t];
                if !on(m) {
                    continue;
                }
                out.bad_logp += (!lp[t].is_finite()) as u8 as f64;
                out.bad_old += (!lpo[t].is_finite()) as u8 as f64;
                let w = m as f64 * c;
                let rho = match level {
                    IsLevel::Token => (lp[t] - lpo[t]).exp(),
                    IsLevel::Sequence => seq_ratio,
                };
                let surr = -(rho * a).min(rho.clamp(lo, hi) * a);
                let clipped = (a > 0.0 && rho > hi) || (a < 0.0 && rho < lo);
                let dsurr = if clipped { 0.0 } else { -(rho as f64) * a as f64 };
                let mut g = 0.0f64;
                match level {
                    IsLevel::Token => g += w * dsurr,
                    IsLevel::Sequence => seq_grad += w * dsurr,
                }
                out.policy += w * surr as f64;
                if let Some(lpr) = lpr {
                    out.bad_ref += (!lpr[t].is_finite()) as u8 as f64;
                    let d = (lpr[t] - lp[t]) as f64;
                    let kl = d.exp() - d - 1.0;
                    out.kl += m as f64 * kl;
                    out.kl_loss += w * beta as f64 * kl;
                    g += w * beta as f64 * (1.0 - d.exp());
                }
                out.ent += m as f64 * ent[t] as f64;
                out.ent_loss -= w * entropy_coef as f64 * ent[t] as f64;
                dh[t] = (-w * entropy_coef as f64) as f32;
                dlp[t] = g as f32;
                out.clip_low += if a < 0.0 && rho < lo { m as f64 } else { 0.0 };
                out.clip_high += if a > 0.0 && rho > hi { m as f64 } else { 0.0 };
                out.ratio += m as f64 * rho as f64;
                out.ratio_min = out.ratio_min.min(rho);
                out.ratio_max = out.ratio_max.max(rho);
            }
            if level == IsLevel::Sequence && seq_grad != 0.0 {
                let per = seq_grad / cnt.max(1.0);
                for t in (0..l).filter(|&t| on(mask[t])) {
                    dlp[t] = (dlp[t] as f64 + per * mask[t] as f64) as f32;
                }
            }
            out
        })
        .collect();
    let mut acc = SeqSums { ratio_min: f32::INFINITY, ratio_max: f32::NEG_INFINITY, ..Default::default() };
    for q in &sums {
        acc.policy += q.policy;
        acc.kl_loss += q.kl_loss;
        acc.ent_loss += q.ent_loss;
        acc.kl += q.kl;
        acc.ent += q.ent;
        acc.clip_low += q.clip_low;
        acc.clip_high += q.clip_high;
        acc.ratio += q.ratio;
        acc.ratio_min = acc.ratio_min.min(q.ratio_min);
        acc.ratio_max = acc.ratio_max.max(q.ratio_max);
        acc.bad_logp += q.bad_logp;
        acc.bad_old += q.bad_old;
        acc.bad_ref += q.bad_ref;
    }
    let mean = |v: f64| if total > 0.0 { (v / total) as f32 } else { 0.0 };
    metrics.fill(0.0);
    metrics[pm::LOSS] = (acc.policy + acc.kl_loss + acc.ent_loss) as f32;
    metrics[pm::POLICY_LOSS] = acc.policy as f32;
    metrics[pm::KL_MEAN] = mean(acc.kl);
    metrics[pm::ENTROPY_MEAN] = mean(acc.ent);
    metrics[pm::CLIP_FRAC_LOW] = mean(acc.clip_low);
    metrics[pm::CLIP_FRAC_HIGH] = mean(acc.clip_high);
    metrics[pm::RATIO_MEAN] = mean(acc.ratio);
    metrics[pm::RATIO_MIN] = if total > 0.0 { acc.ratio_min } else { 0.0 };
    metrics[pm::RATIO_MAX] = if total > 0.0 { acc.ratio_max } else { 0.0 };
    metrics[pm::MASK_SUM] = total as f32;
    metrics[pm::BAD_LOGP] = acc.bad_logp as f32;
    metrics[pm::BAD_LOGP_OLD] = acc.bad_old as f32;
    metrics[pm::BAD_LOGP_REF] = if use_kl && x.logp_ref.is_none() { (s * l) as f32 } else { acc.bad_ref as f32 };
    metrics[pm::BAD_ADVANTAGE] = bad_adv as f32;
    metrics[pm::BAD_MASK] = bad_mask as f32;
    metrics[pm::BAD_ENTROPY] =
        (0..s * l).filter(|&t| x.mask[t] != 0.0 && good(x.mask[t]) && !x.entropy[t].is_finite()).count() as f32;
}

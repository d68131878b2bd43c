//! Parity cases of the policy-loss op (`kernels/policy_loss.cu` against the CPU oracle): every
//! loss type × importance-sampling level, each with and without the KL (and with β ≠ 0 but no
//! reference), with delta, verl's dual clip, an entropy threshold, every KL estimator with and
//! without bias correction, and non-default normalisers (seq_norm, token_norm, accum).
//!
//! Two input sets (two shapes, so two sets of rows):
//! - "spread": S=6, L=45, per-sequence log-ratio shifts plus N(0, 0.3²) noise, so that at both
//!   levels the low and high clips, delta, the dual clip and cispo's cap all bind somewhere;
//! - "near": S=5, L=33, log-ratios N(0, 0.04²) (nearly on-policy), so that vespo's gamma
//!   weights are O(1) for every sequence instead of 0 (a sum of 20 log-ratios of 0.3 puts
//!   them at e^-1000) and sapo's sigmoid sits at its steep middle.
//!
//! Coverage rows check that each branch really occurs in the inputs (or changes the loss),
//! since a case where a branch never fires checks nothing about it.

use super::{case_seed, nans, Report, Tol};
use crate::backend::cpu::{vespo_phi, CpuBackend};
use crate::backend::device::Device;
use crate::backend::kernel::KernelBackend;
use crate::backend::prelude::*;
use crate::backend::{policy_metric as pm, IsLevel, KlEstimator, LossType, PolicyLossInputs, PolicyLossParams};
use crate::rl::objective::linear_quantile;
use crate::util::rng::Rng;

const LOSS_TYPES: [LossType; 8] = [
    LossType::Grpo,
    LossType::Bnpo,
    LossType::DrGrpo,
    LossType::Dapo,
    LossType::Cispo,
    LossType::Sapo,
    LossType::Luspo,
    LossType::Vespo,
];

/// One input set: its name, S, L, each sequence's log-ratio shift, the log-ratio noise's
/// std, and whether the KL-estimator matrix runs on it too.
struct InputSet {
    name: &'static str,
    s: usize,
    l: usize,
    shifts: &'static [f32],
    noise: f32,
    kl_matrix: bool,
}

/// Every case of this family.
pub(super) fn cases<D: Device>(k: &KernelBackend<D>, seed: u64, rep: &mut Report) {
    let sets = [
        InputSet {
            name: "spread",
            s: 6,
            l: 45,
            shifts: &[0.35, -0.4, 0.0, 0.0, 0.5, -0.05],
            noise: 0.3,
            kl_matrix: true,
        },
        InputSet { name: "near", s: 5, l: 33, shifts: &[0.0; 5], noise: 0.04, kl_matrix: false },
    ];
    for (case, set) in sets.into_iter().enumerate() {
        let mut rng = Rng::new(case_seed(seed, 500 + case as u64));
        let x = Inputs::new(&mut rng, set.s, set.l, set.shifts, set.noise);
        let cfgs = configs(&x, set.kl_matrix);
        let shape = format!("S={} L={} {} ({} configs)", set.s, set.l, set.name, cfgs.len());
        rep.case("policy_loss", &shape, |rep| compare_case(k, &x, &cfgs, set.name, &shape, rep));
    }
}

/// The host inputs of one case.
struct Inputs {
    s: usize,
    l: usize,
    mask: Vec<f32>,
    logp: Vec<f32>,
    logp_old: Vec<f32>,
    logp_ref: Vec<f32>,
    entropy: Vec<f32>,
    advantages: Vec<f32>,
}

impl Inputs {
    fn new(rng: &mut Rng, s: usize, l: usize, shifts: &[f32], noise: f32) -> Self {
        let mut mask = vec![0.0f32; s * l];
        for i in 0..s {
            // Ragged completion lengths; sequence 3 is all padding, sequence 4 has 0.5 weights.
            let len = if i == 3 { 0 } else { 1 + rng.below(l) };
            for t in 0..len {
                mask[i * l + t] = if i == 4 && t % 3 == 0 { 0.5 } else { 1.0 };
            }
        }
        mask[s * l - 1] = -1.0; // an invalid weight: counted in BAD_MASK, never read
        let logp_old: Vec<f32> = (0..s * l).map(|_| -2.0 + 0.5 * rng.normal()).collect();
        let mut logp: Vec<f32> =
            logp_old.iter().enumerate().map(|(j, &o)| o + shifts[j / l] + noise * rng.normal()).collect();
        let logp_ref: Vec<f32> = logp.iter().map(|&o| o + 0.2 * rng.normal()).collect();
        let entropy: Vec<f32> = (0..s * l).map(|_| 2.0 + rng.normal().abs()).collect();
        let advantages = [1.2f32, -0.7, 0.4, 0.9, -1.5, 0.3][..s].to_vec();
        // Padding may hold anything, NaN included: it must not reach the loss.
        for (lp, &m) in logp.iter_mut().zip(&mask) {
            if m == 0.0 {
                *lp = f32::NAN;
            }
        }
        Inputs { s, l, mask, logp, logp_old, logp_ref, entropy, advantages }
    }

    /// Valid token positions (mask finite, > 0).
    fn valid(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.s * self.l).filter(|&j| self.mask[j].is_finite() && self.mask[j] > 0.0)
    }

    /// Each sequence's Σ m·clamp(lr, −20, 20) (vespo's log-weight before its clamp) and its
    /// valid token count.
    fn seq_log_ratio(&self, i: usize) -> (f64, usize) {
        let r = i * self.l..(i + 1) * self.l;
        let on: Vec<usize> = self.valid().filter(|j| r.contains(j)).collect();
        let sum = on
            .iter()
            .map(|&j| f64::from(self.mask[j]) * f64::from((self.logp[j] - self.logp_old[j]).clamp(-20.0, 20.0)))
            .sum();
        (sum, on.len())
    }
}

/// One configuration: a label, the op's constants, whether the reference log-probs are given.
struct Config {
    what: String,
    params: PolicyLossParams,
    with_ref: bool,
}

/// The configurations of one case: per loss type × level, plain (β = 0), KL (k3, bias
/// correction), β ≠ 0 without a reference, delta + entropy threshold + normalisers, and the
/// dual clip + normalisers; with `kl_matrix` also every KL estimator × bias correction × level
/// under dapo.
fn configs(x: &Inputs, kl_matrix: bool) -> Vec<Config> {
    let (s, l) = (x.s, x.l);
    let mut ent: Vec<f32> = x.valid().map(|j| x.entropy[j]).collect();
    // The median entropy: about half of the tokens keep their policy term.
    let threshold = linear_quantile(&mut ent, 0.5);
    let total: f32 = x.valid().map(|j| x.mask[j]).sum();
    let mut out = vec![];
    let ests = [KlEstimator::K1, KlEstimator::K2, KlEstimator::K3];
    for (n, loss_type) in LOSS_TYPES.into_iter().enumerate() {
        for level in [IsLevel::Token, IsLevel::Sequence] {
            let base = PolicyLossParams {
                loss_type,
                level,
                // cispo caps ρ at eps_high itself: 1.2 puts ratios on both sides.
                eps_high: if loss_type == LossType::Cispo { 1.2 } else { 0.28 },
                entropy_coef: 0.01,
                max_completion_length: l + 3,
                ..PolicyLossParams::dapo(s, l)
            };
            let kl = PolicyLossParams { beta: 0.04, use_bias_correction_kl: true, ..base };
            let name = |c: &str| format!("{loss_type:?}/{level:?}/{c}");
            out.push(Config { what: name("plain"), params: base, with_ref: false });
            out.push(Config { what: name("k3 bias"), params: kl, with_ref: true });
            out.push(Config { what: name("beta without ref"), params: kl, with_ref: false });
            let est = ests[n % 3];
            let bias = n % 2 == 0;
            let delta = PolicyLossParams {
                delta: Some(1.4),
                kl_estimator: est,
                use_bias_correction_kl: bias,
                entropy_threshold: threshold,
                entropy_coef: 0.02,
                seq_norm: (2 * s + 1) as f32,
                token_norm: 1.5 * total,
                accum: 3.0,
                ..kl
            };
            out.push(Config {
                what: name(&format!("delta+mask+norms {est:?} bias {bias}")),
                params: delta,
                with_ref: true,
            });
            let dual = PolicyLossParams {
                clip_ratio_c: Some(1.5),
                kl_estimator: KlEstimator::K2,
                seq_norm: (s + 2) as f32,
                token_norm: total + 7.0,
                accum: 2.0,
                ..kl
            };
            out.push(Config { what: name("dual clip+norms"), params: dual, with_ref: true });
        }
    }
    if kl_matrix {
        for est in ests {
            for bias in [false, true] {
                for level in [IsLevel::Token, IsLevel::Sequence] {
                    let params = PolicyLossParams {
                        level,
                        beta: 0.1,
                        kl_estimator: est,
                        use_bias_correction_kl: bias,
                        ..PolicyLossParams::dapo(s, l)
                    };
                    out.push(Config { what: format!("Dapo/{level:?}/{est:?} bias {bias}"), params, with_ref: true });
                }
            }
        }
    }
    out
}

/// The oracle's outputs for one configuration.
fn oracle(cpu: &CpuBackend, x: &Inputs, p: PolicyLossParams, with_ref: bool) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let n = x.s * x.l;
    let (mut dlp, mut dh, mut met) = (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; pm::LEN]);
    let inputs = PolicyLossInputs::<CpuBackend> {
        logp: &x.logp,
        logp_old: &x.logp_old,
        logp_ref: with_ref.then_some(&x.logp_ref),
        advantages: &x.advantages,
        entropy: &x.entropy,
        mask: &x.mask,
    };
    cpu.policy_loss(&mut dlp, &mut dh, &mut met, inputs, p);
    (dlp, dh, met)
}

fn compare_case<D: Device>(
    k: &KernelBackend<D>,
    x: &Inputs,
    cfgs: &[Config],
    name: &str,
    shape: &str,
    rep: &mut Report,
) {
    let cpu = CpuBackend::new(Some(1));
    let n = x.s * x.l;
    let (d_lp, d_lpo, d_lpr) = (k.upload(&x.logp), k.upload(&x.logp_old), k.upload(&x.logp_ref));
    let (d_adv, d_ent, d_mask) = (k.upload(&x.advantages), k.upload(&x.entropy), k.upload(&x.mask));
    let mut cov = Coverage::default();
    for cfg in cfgs {
        let p = cfg.params;
        let (dlp, dh, met) = oracle(&cpu, x, p, cfg.with_ref);
        let (mut k_dlp, mut k_dh, mut k_met) = (k.upload(&nans(n)), k.upload(&nans(n)), k.upload(&nans(pm::LEN)));
        let inputs = PolicyLossInputs::<KernelBackend<D>> {
            logp: &d_lp,
            logp_old: &d_lpo,
            logp_ref: cfg.with_ref.then_some(&d_lpr),
            advantages: &d_adv,
            entropy: &d_ent,
            mask: &d_mask,
        };
        k.policy_loss(&mut k_dlp, &mut k_dh, &mut k_met, inputs, p);
        let (g_dlp, g_dh, g_met) = (k.download(&k_dlp), k.download(&k_dh), k.download(&k_met));
        let what = format!("worst {}", cfg.what);
        // Tolerances. Per-token gradients are a few f32 operations on the same inputs (the
        // oracle goes through f64, and the kernel scales by c_i last); the sequence-level ratio
        // and gradient, and vespo's weight, add an L-term f32 sum: 1e-5 of the tensor's scale.
        // (vespo's φ = exp(λ + k·lw − λe^lw) turns an error δ in the summed log-ratio lw into a
        // relative error |k − λe^lw|·δ; in the "near" set |lw| < 1, so that factor is < 10 and
        // δ ≈ 33·6e-8: ≤ 2e-5 relative on φ at worst, ~1e-6 observed.) Metrics are f32 sums over
        // ≤ 270 tokens in another order than the oracle's f64 ones: 2e-5 relative (+1e-6
        // absolute, for the KL mean and clip fractions of size ~1e-2); counts must agree exactly
        // and ratio min/max to 2 ulps (expf vs Rust's exp).
        let grad_tol = Tol::Scale { tol: 1e-5, floor: 1e-6 };
        rep.cmp("policy_loss/dlogp", shape, &g_dlp, &dlp, grad_tol, &format!("of the scale; {what}"));
        rep.cmp("policy_loss/dentropy", shape, &g_dh, &dh, grad_tol, &format!("of the scale; {what}"));
        let counts = [
            pm::MASK_SUM,
            pm::BAD_LOGP,
            pm::BAD_LOGP_OLD,
            pm::BAD_LOGP_REF,
            pm::BAD_ADVANTAGE,
            pm::BAD_MASK,
            pm::BAD_ENTROPY,
        ];
        let minmax = [pm::RATIO_MIN, pm::RATIO_MAX];
        let pick = |m: &[f32], idx: &[usize]| idx.iter().map(|&i| m[i]).collect::<Vec<f32>>();
        let sums: Vec<usize> = (0..pm::LEN).filter(|i| !counts.contains(i) && !minmax.contains(i)).collect();
        let tol = Tol::Each { tol: 2e-5, floor: 0.0, abs: 1e-6 };
        rep.cmp("policy_loss/metrics", shape, &pick(&g_met, &sums), &pick(&met, &sums), tol, &what);
        let tol = Tol::Each { tol: 2.5e-7, floor: 0.0, abs: 0.0 };
        rep.cmp("policy_loss/ratio_min_max", shape, &pick(&g_met, &minmax), &pick(&met, &minmax), tol, &what);
        rep.cmp("policy_loss/counts", shape, &pick(&g_met, &counts), &pick(&met, &counts), Tol::Exact, &what);
        // Padding gradients are exactly zero.
        let pad: Vec<f32> =
            x.mask.iter().enumerate().filter(|(_, &m)| m <= 0.0).flat_map(|(j, _)| [g_dlp[j], g_dh[j]]).collect();
        rep.cmp("policy_loss/padding", shape, &pad, &vec![0.0f32; pad.len()], Tol::Exact, "padding gradients are 0");
        cov.record(&cpu, x, cfg, &met);
    }
    cov.report(x, name, shape, rep);
}

/// Which branches the oracle went through over a case's configurations.
#[derive(Default)]
struct Coverage {
    /// Clip family: a low / high clip fraction > 0, per level (token, sequence).
    low: [bool; 2],
    high: [bool; 2],
    /// Removing delta changes the loss, per level.
    delta: [bool; 2],
    /// The dual clip's cap is taken somewhere, per level.
    dual: [bool; 2],
    /// cispo's cap binds for some tokens (high fraction > 0) but not all of them.
    cispo: bool,
    /// Removing the entropy threshold changes the loss.
    entropy_mask: bool,
}

impl Coverage {
    fn record(&mut self, cpu: &CpuBackend, x: &Inputs, cfg: &Config, met: &[f32]) {
        let p = cfg.params;
        let lv = usize::from(p.level == IsLevel::Sequence);
        let differs = |q: PolicyLossParams| oracle(cpu, x, q, cfg.with_ref).2[pm::LOSS] != met[pm::LOSS];
        if p.loss_type.is_clipped() {
            self.low[lv] |= met[pm::CLIP_FRAC_LOW] > 0.0;
            self.high[lv] |= met[pm::CLIP_FRAC_HIGH] > 0.0;
            self.dual[lv] |= met[pm::DUAL_CLIP_FRAC] > 0.0;
            if p.delta.is_some() {
                self.delta[lv] |= differs(PolicyLossParams { delta: None, ..p });
            }
        }
        if p.loss_type == LossType::Cispo && p.level == IsLevel::Token {
            let pos: f32 = x.valid().filter(|&j| x.advantages[j / x.l] > 0.0).map(|j| x.mask[j]).sum();
            let frac = met[pm::CLIP_FRAC_HIGH] * met[pm::MASK_SUM];
            self.cispo |= frac > 0.0 && frac < pos;
        }
        if p.entropy_threshold.is_some() {
            self.entropy_mask |= differs(PolicyLossParams { entropy_threshold: None, ..p });
        }
    }

    fn report(&self, x: &Inputs, name: &str, shape: &str, rep: &mut Report) {
        if name == "spread" {
            let both = |v: [bool; 2]| v[0] && v[1];
            rep.check("policy_loss/coverage_clip", shape, both(self.low) && both(self.high), "both clips, both levels");
            rep.check("policy_loss/coverage_delta", shape, both(self.delta), "delta changes the loss at both levels");
            rep.check("policy_loss/coverage_dual", shape, both(self.dual), "the dual clip binds at both levels");
            rep.check("policy_loss/coverage_cispo", shape, self.cispo, "cispo's cap binds for some tokens, not all");
            rep.check(
                "policy_loss/coverage_entropy_mask",
                shape,
                self.entropy_mask,
                "the entropy threshold changes the loss",
            );
        } else {
            // vespo's weight is O(1) for every non-empty sequence, under both advantage signs'
            // constants (TRL's defaults).
            let p = PolicyLossParams::dapo(x.s, x.l);
            let ok = (0..x.s).all(|i| {
                let (sum, len) = x.seq_log_ratio(i);
                let phi = vespo_phi(&p, sum, f64::from(x.advantages[i]));
                len == 0 || ((1e-2..=1e2).contains(&phi) && sum.abs() < 1.0)
            });
            rep.check(
                "policy_loss/coverage_vespo",
                shape,
                ok,
                "vespo's |lw| < 1 and gamma weight in [1e-2, 1e2] for every sequence",
            );
        }
    }
}

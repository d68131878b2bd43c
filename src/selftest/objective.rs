//! Parity of the whole chunked DAPO objective (hidden × lm_head → log-probs → loss →
//! gradients) on the device against the same objective run on the CPU.

use super::{case_seed, nans, randn, Report, Tol};
use crate::backend::cpu::CpuBackend;
use crate::backend::device::Device;
use crate::backend::kernel::KernelBackend;
use crate::backend::prelude::*;
use crate::backend::{IsLevel, KlEstimator, LossType};
use crate::rl::objective::{DapoObjective, LossNorm, ObjectiveBatch, ObjectiveConfig, ObjectiveMetrics};
use crate::util::rng::Rng;

pub(super) fn cases<D: Device>(k: &KernelBackend<D>, seed: u64, rep: &mut Report) {
    let cpu = CpuBackend::new(Some(1));
    // (S, L, C, V, chunk rows, config): a short last chunk in each; V = 50257 with few rows
    // exercises the kernels at GPT-2's vocabulary through the real chunking.
    let base = ObjectiveConfig::default();
    let cases = [
        (3usize, 7usize, 16usize, 37usize, 8usize, base.clone()),
        (
            2,
            9,
            24,
            300,
            5,
            ObjectiveConfig {
                loss_type: LossType::Grpo,
                importance_sampling_level: IsLevel::Sequence,
                beta: 0.04,
                entropy_coef: 0.01,
                temperature: 0.7,
                ..base.clone()
            },
        ),
        (1, 3, 16, 50257, 2, ObjectiveConfig { beta: 0.04, entropy_coef: 0.01, ..base.clone() }),
        // A loss without kinks (sapo), another KL estimator, as a micro-batch (LossNorm).
        (
            3,
            8,
            16,
            37,
            7,
            ObjectiveConfig {
                loss_type: LossType::Sapo,
                beta: 0.04,
                kl_estimator: KlEstimator::K2,
                entropy_coef: 0.01,
                ..base.clone()
            },
        ),
    ];
    for (case, (s, l, c, v, chunk, cfg)) in cases.into_iter().enumerate() {
        let cfg = ObjectiveConfig { chunk_rows: chunk, ..cfg };
        let shape = format!("S={s} L={l} C={c} V={v} chunk={chunk}");
        rep.case("objective", &shape, |rep| {
            objective_case(k, &cpu, case_seed(seed, 900 + case as u64), (s, l, c, v), &cfg, &shape, rep)
        });
    }
}

fn objective_case<D: Device>(
    k: &KernelBackend<D>,
    cpu: &CpuBackend,
    seed: u64,
    (s, l, c, v): (usize, usize, usize, usize),
    cfg: &ObjectiveConfig,
    shape: &str,
    rep: &mut Report,
) {
    let n = s * l;
    // The sapo case runs as a micro-batch of a larger minibatch.
    let norm = (cfg.loss_type == LossType::Sapo).then_some(LossNorm { sequences: 7.0, tokens: 40.0, accum: 2.0 });
    let mut rng = Rng::new(seed);
    // hidden ~ N(0,1), W ~ N(0, 0.5²): logits of std ~0.5·√C, a realistic spread.
    let hidden = randn(&mut rng, n * c, 1.0);
    let weight = randn(&mut rng, v * c, 0.5);
    let targets: Vec<u32> = (0..n).map(|_| rng.below(v) as u32).collect();
    let mut mask = vec![0.0f32; n];
    for i in 0..s {
        let len = 1 + rng.below(l);
        mask[i * l..i * l + len].fill(1.0);
    }
    let advantages: Vec<f32> =
        (0..s).map(|i| if i % 2 == 0 { 0.8 + rng.uniform() } else { -0.8 - rng.uniform() }).collect();
    let grad_weight0 = randn(&mut rng, v * c, 0.1);

    let fail =
        |rep: &mut Report, what: &str, e: crate::Error| rep.check("objective", shape, false, &format!("{what}: {e}"));
    // The current log-probs on the CPU, to place logp_old so that the ratios straddle both
    // clip bounds but stay ≥ 0.02 (in log space) away from them: on a GPU the logits carry
    // TF32 rounding (≲ 5e-3, see below), which must not flip a clip decision.
    let (c_h, c_w, c_t) = (hidden.clone(), weight.clone(), targets.clone());
    let mut cpu_obj = match DapoObjective::<CpuBackend>::new(cfg.clone()) {
        Ok(o) => o,
        Err(e) => return fail(rep, "config", e),
    };
    let (logp_cpu, ent_cpu) = match cpu_obj.token_logprobs(cpu, &c_h, &c_w, &c_t, n, c, v) {
        Ok(x) => x,
        Err(e) => return fail(rep, "CPU token_logprobs", e),
    };
    let bounds = [(1.0 - cfg.eps_low).ln(), (1.0 + cfg.eps_high).ln()];
    let mut d: Vec<f32> = (0..n).map(|_| 0.3 * rng.normal()).collect();
    let away = |x: f32| bounds.iter().all(|b| (x - b).abs() >= 0.02);
    for x in d.iter_mut() {
        if !away(*x) {
            *x += 0.05;
        }
    }
    if cfg.importance_sampling_level == IsLevel::Sequence {
        // GSPO's ratio is exp of the masked mean of d: keep each sequence's mean away too.
        for i in 0..s {
            let r = i * l..(i + 1) * l;
            let (num, den) = r.clone().fold((0.0f32, 0.0f32), |(a, b), j| (a + mask[j] * d[j], b + mask[j]));
            if !away(num / den.max(1.0)) {
                d[r].iter_mut().for_each(|x| *x += 0.05);
            }
        }
    }
    let logp_old: Vec<f32> = logp_cpu.iter().zip(&d).map(|(lp, d)| lp - d).collect();
    let logp_ref: Vec<f32> = logp_cpu.iter().map(|lp| lp + 0.2 * rng.normal()).collect();

    // Oracle: the objective on the CPU backend.
    let (mut gh_cpu, mut gw_cpu) = (vec![0.0f32; n * c], grad_weight0.clone());
    let batch = ObjectiveBatch::<CpuBackend> {
        hidden: &c_h,
        weight: &c_w,
        targets: &c_t,
        mask: &mask,
        advantages: &advantages,
        logp_old: &logp_old,
        logp_ref: Some(&logp_ref),
        s,
        l,
        c,
        v,
        norm,
    };
    let m_cpu = match cpu_obj.forward_backward(cpu, &batch, &mut gh_cpu, &mut gw_cpu) {
        Ok(m) => m,
        Err(e) => return fail(rep, "CPU objective", e),
    };

    // Device.
    let (d_h, d_w, d_t) = (k.upload(&hidden), k.upload(&weight), k.upload_ids(&targets));
    let (d_mask, d_adv, d_old, d_ref) =
        (k.upload(&mask), k.upload(&advantages), k.upload(&logp_old), k.upload(&logp_ref));
    let mut obj = match DapoObjective::<KernelBackend<D>>::new(cfg.clone()) {
        Ok(o) => o,
        Err(e) => return fail(rep, "config", e),
    };
    let (logp_dev, ent_dev) = match obj.token_logprobs(k, &d_h, &d_w, &d_t, n, c, v) {
        Ok(x) => x,
        Err(e) => return fail(rep, "device token_logprobs", e),
    };
    let (mut d_gh, mut d_gw) = (k.upload(&nans(n * c)), k.upload(&grad_weight0));
    let batch = ObjectiveBatch::<KernelBackend<D>> {
        hidden: &d_h,
        weight: &d_w,
        targets: &d_t,
        mask: &d_mask,
        advantages: &d_adv,
        logp_old: &d_old,
        logp_ref: Some(&d_ref),
        s,
        l,
        c,
        v,
        norm,
    };
    let m_dev = match obj.forward_backward(k, &batch, &mut d_gh, &mut d_gw) {
        Ok(m) => m,
        Err(e) => return fail(rep, "device objective", e),
    };
    let (gh_dev, gw_dev) = (k.download(&d_gh), k.download(&d_gw));

    // Tolerances. On a GPU the logits GEMM runs in TF32: each logit errs by up to
    // 2⁻¹⁰·Σ_c|h||w| ≈ 1e-3·C·0.8·0.4 ≲ 1e-2 at C = 24 in the worst case, ~1e-3 typically
    // (random signs); log p and H inherit that absolute error, the loss (an O(1) mean of
    // ratio·A terms) and the gradients (one more TF32 GEMM each) the same relative size. So
    // 1e-2 of the tensor's scale for logp, H, d hidden and dW, and 1e-2·max(|m|, 0.1) per
    // metric (the k3 KL is ~1e-2 and moves by d·δlogp). On the emulator the GEMM is the CPU's
    // and only f32 summation order differs (~1e-6). A wrong temperature, clip branch or a
    // dropped chunk moves these by ≥ 5e-2.
    let tf32 = Tol::Scale { tol: 1e-2, floor: 1e-3 };
    let note = "of the scale (TF32 logits on a GPU)";
    rep.cmp("objective/logp", shape, &logp_dev, &logp_cpu, tf32, note);
    rep.cmp("objective/entropy", shape, &ent_dev, &ent_cpu, tf32, note);
    rep.cmp("objective/grad_hidden", shape, &gh_dev, &gh_cpu, tf32, note);
    rep.cmp("objective/grad_weight", shape, &gw_dev, &gw_cpu, tf32, "of the scale; accumulated into random dW");
    let pick = |m: &ObjectiveMetrics| vec![m.loss, m.policy_loss, m.kl, m.entropy, m.ratio_mean, m.tokens];
    let tol = Tol::Each { tol: 1e-2, floor: 0.1, abs: 0.0 };
    let note = "loss, policy loss, KL, H, mean ratio, tokens";
    rep.cmp("objective/loss_metrics", shape, &pick(&m_dev), &pick(&m_cpu), tol, note);
    // Clip fractions count tokens: with every ratio ≥ 0.02 from the bounds the same tokens
    // clip on both sides, and the fractions differ only by the rounding of count / Σmask.
    let fracs = |m: &ObjectiveMetrics| vec![m.clip_frac_low, m.clip_frac_high, m.clip_frac_dual];
    let tol = Tol::Each { tol: 1e-6, floor: 0.0, abs: 1e-6 };
    rep.cmp("objective/clip_fracs", shape, &fracs(&m_dev), &fracs(&m_cpu), tol, "the same tokens clip");
}

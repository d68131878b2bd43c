//! Test bodies for the DAPO objective and its two ops (fused log-prob + entropy, clipped
//! policy loss), shared by every backend.
//!
//! Tolerances. The golden references are float64 (PyTorch autograd, TRL's definitions)
//! rounded to float32; the implementation is float32 throughout with f64 accumulation of the
//! loss sums. On these shapes (C = 16, V = 37, N = 28) f32 rounding of the logits and the
//! log-sum-exp gives ~1e-7 relative error per value, so:
//! - logp, entropy, loss and metrics: 1e-5 absolute (values are O(1), at most ~2.2 for the
//!   ratios and 17 for the exact token count; observed ≤ 1e-6 over all 16 cases);
//! - grad_hidden, grad_weight: 2e-5 relative to the tensor's largest magnitude (observed
//!   ≤ 6e-7): a wrong term (missing temperature factor, wrong normaliser, wrong clip branch)
//!   moves them by ≥ 1e-2 relative.
//!
//! The margins (10-30x the observed error) leave room for other summation orders (thread
//! counts, a device backend's reductions) without hiding a real mistake.
//!
//! Clip decisions cannot flip under rounding: the generator keeps every ratio at least 2e-3
//! (in log space) away from the clip bounds.

use super::Precision;
use super::{dot, randn, rel_err};
use gepa_dapo_grn::backend::{policy_metric as pm, Backend, LogprobChunk, PolicyLossInputs, PolicyLossParams};
use gepa_dapo_grn::rl::objective::{
    linear_quantile, DapoObjective, IsLevel, KlEstimator, LossType, ObjectiveBatch, ObjectiveConfig,
};
use gepa_dapo_grn::util::rng::Rng;
use std::path::PathBuf;

fn data_dir() -> PathBuf {
    super::test_data().join("objective")
}

/// One golden case: hyper-parameters, inputs and references.
pub struct Case {
    pub name: String,
    pub cfg: ObjectiveConfig,
    pub s: usize,
    pub l: usize,
    pub c: usize,
    pub v: usize,
    pub hidden: Vec<f32>,
    pub weight: Vec<f32>,
    pub targets: Vec<u32>,
    pub mask: Vec<f32>,
    pub advantages: Vec<f32>,
    pub logp_old: Vec<f32>,
    pub logp_ref: Vec<f32>,
    pub logp: Vec<f32>,
    pub entropy: Vec<f32>,
    pub loss: f32,
    pub grad_hidden: Vec<f32>,
    pub grad_weight: Vec<f32>,
    pub metrics: Vec<f32>,
}

/// Every case in tests/data/objective/ with the float64 references.
pub fn load_cases() -> Vec<Case> {
    load_cases_with("cases.safetensors")
}

/// Every case, its inputs from `cases.safetensors` and its references (logp, entropy, loss,
/// gradients, metrics) from `refs` in the same folder.
pub fn load_cases_with(refs: &str) -> Vec<Case> {
    let dir = data_dir();
    let ref_bytes = std::fs::read(dir.join(refs)).unwrap_or_else(|e| panic!("{refs}: {e}"));
    let rst = safetensors::SafeTensors::deserialize(&ref_bytes).unwrap();
    let reference = |name: &str| -> Vec<f32> {
        let t = rst.tensor(name).unwrap_or_else(|_| panic!("missing {name} in {refs}"));
        assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
        t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
    };
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).expect("cases.json")).unwrap();
    let bytes = std::fs::read(dir.join("cases.safetensors")).expect("cases.safetensors");
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let f32s = |name: &str| -> Vec<f32> {
        let t = st.tensor(name).unwrap_or_else(|_| panic!("missing {name}"));
        assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
        t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
    };
    let ids = |name: &str| -> Vec<u32> {
        let t = st.tensor(name).unwrap();
        assert_eq!(t.dtype(), safetensors::Dtype::I64, "{name}");
        t.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32).collect()
    };
    let mut out = vec![];
    for m in meta["cases"].as_array().unwrap() {
        let name = m["name"].as_str().unwrap().to_string();
        let g = |k: &str| m[k].as_f64().unwrap();
        let u = |k: &str| m[k].as_u64().unwrap() as usize;
        let cfg = ObjectiveConfig {
            loss_type: m["loss_type"].as_str().unwrap().parse().unwrap(),
            importance_sampling_level: m["level"].as_str().unwrap().parse().unwrap(),
            eps_low: g("eps_low") as f32,
            eps_high: g("eps_high") as f32,
            beta: g("beta") as f32,
            entropy_coef: g("entropy_coef") as f32,
            temperature: g("temperature") as f32,
            chunk_rows: 5,
            max_completion_length: Some(u("max_completion_length")),
            // The references weight the KL by nothing (TRL before `use_bias_correction_kl`).
            use_bias_correction_kl: false,
            ..ObjectiveConfig::default()
        };
        let t = |k: &str| f32s(&format!("{name}.{k}"));
        let r = |k: &str| reference(&format!("{name}.{k}"));
        out.push(Case {
            cfg,
            s: u("S"),
            l: u("L"),
            c: u("C"),
            v: u("V"),
            hidden: t("hidden"),
            weight: t("weight"),
            targets: ids(&format!("{name}.targets")),
            mask: t("mask"),
            advantages: t("advantages"),
            logp_old: t("logp_old"),
            logp_ref: t("logp_ref"),
            logp: r("logp"),
            entropy: r("entropy"),
            loss: r("loss")[0],
            grad_hidden: r("grad_hidden"),
            grad_weight: r("grad_weight"),
            metrics: r("metrics"),
            name,
        });
    }
    assert_eq!(out.len(), 16, "4 loss types x 2 levels x 2 betas");
    out
}

/// One case of TRL's own `_compute_loss` (tools/golden/gen_policy_loss_trl.py): the op's
/// constants and host inputs, and TRL's loss, gradients and metrics.
pub struct TrlCase {
    pub name: String,
    pub params: PolicyLossParams,
    /// TRL's `top_entropy_quantile` (the threshold is computed here, as the objective does).
    pub top_entropy_quantile: f32,
    pub mask: Vec<f32>,
    pub advantages: Vec<f32>,
    pub logp: Vec<f32>,
    pub logp_old: Vec<f32>,
    pub logp_ref: Vec<f32>,
    pub entropy: Vec<f32>,
    pub loss: f32,
    pub dlogp: Vec<f32>,
    pub dentropy: Vec<f32>,
    /// kl, entropy, clip_low, clip_high, entropy threshold (NaN without one).
    pub metrics: Vec<f32>,
}

/// Every case in tests/data/objective/policy_loss_trl.*, with TRL's knobs mapped onto the
/// op's: seq_norm = S·accum, token_norm = num_items_in_batch, accum.
pub fn load_trl_cases() -> Vec<TrlCase> {
    let dir = data_dir();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("policy_loss_trl.json")).expect("json")).unwrap();
    let bytes = std::fs::read(dir.join("policy_loss_trl.safetensors")).expect("policy_loss_trl.safetensors");
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let f32s = |name: &str| -> Vec<f32> {
        let t = st.tensor(name).unwrap_or_else(|_| panic!("missing {name}"));
        assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
        t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
    };
    let mut out = vec![];
    for m in meta["cases"].as_array().unwrap() {
        let name = m["name"].as_str().unwrap().to_string();
        let g = |k: &str| m[k].as_f64().unwrap() as f32;
        let u = |k: &str| m[k].as_u64().unwrap() as usize;
        let (s, l) = (u("S"), u("L"));
        let params = PolicyLossParams {
            loss_type: m["loss_type"].as_str().unwrap().parse().unwrap(),
            level: m["level"].as_str().unwrap().parse().unwrap(),
            eps_low: g("eps_low"),
            eps_high: g("eps_high"),
            delta: m["delta"].as_f64().map(|d| d as f32),
            beta: g("beta"),
            kl_estimator: KlEstimator::K3,
            use_bias_correction_kl: m["use_bias_correction_kl"].as_bool().unwrap(),
            entropy_coef: g("entropy_coef"),
            sapo_temperature_pos: g("sapo_temperature_pos"),
            sapo_temperature_neg: g("sapo_temperature_neg"),
            vespo_k_pos: g("vespo_k_pos"),
            vespo_lambda_pos: g("vespo_lambda_pos"),
            vespo_k_neg: g("vespo_k_neg"),
            vespo_lambda_neg: g("vespo_lambda_neg"),
            max_completion_length: u("max_completion_length"),
            seq_norm: (s * u("accum")) as f32,
            token_norm: g("num_items_in_batch"),
            accum: g("accum"),
            ..PolicyLossParams::dapo(s, l)
        };
        let t = |k: &str| f32s(&format!("{name}.{k}"));
        out.push(TrlCase {
            params,
            top_entropy_quantile: g("top_entropy_quantile"),
            mask: t("mask"),
            advantages: t("advantages"),
            logp: t("logp"),
            logp_old: t("logp_old"),
            logp_ref: t("logp_ref"),
            entropy: t("entropy"),
            loss: t("loss")[0],
            dlogp: t("dlogp"),
            dentropy: t("dentropy"),
            metrics: t("metrics"),
            name,
        });
    }
    assert_eq!(out.len(), 25, "8 loss types x 2 levels, 8 knob cases, one without KL");
    out
}

/// The policy-loss op against TRL 1.16's `GRPOTrainer._compute_loss` run on the same inputs
/// (every loss type × level, delta, the entropy mask, bias correction on and off, gradient
/// accumulation and a token normaliser other than the micro-batch's own): loss, d loss/d logp,
/// d loss/d entropy and TRL's logged kl, entropy and clip fractions. The references are f64
/// rounded to f32 and the op sums in f64 over ≤ 28 tokens from f32 per-token terms, so the
/// values agree to a few f32 ulps: 2e-6 absolute on the O(1) loss and metrics, 1e-5 of the
/// scale on the gradients (observed ≤ 3e-7). The entropy threshold, computed here by
/// [`linear_quantile`] as the objective does, matches torch.quantile's to a few f32 ulps.
pub fn trl_golden<K: Backend>(k: K, _prec: Precision) {
    let mut worst = [0.0f32; 4];
    for c in load_trl_cases() {
        let (s, l) = (c.params.s, c.params.l);
        let n = s * l;
        let threshold = (c.top_entropy_quantile < 1.0).then(|| {
            let mut on: Vec<f32> = (0..n).filter(|&j| c.mask[j] != 0.0).map(|j| c.entropy[j]).collect();
            linear_quantile(&mut on, 1.0 - f64::from(c.top_entropy_quantile)).unwrap()
        });
        if let Some(th) = threshold {
            // TRL's 1 − q is a Python float rounded to f32 by torch, ours 1 − (q as f32), an ulp
            // apart; torch then interpolates in f32, this in f64: a few ulps of θ. No masked
            // entropy lies that close to θ, so the masks are the same.
            let want = c.metrics[4];
            assert!((th - want).abs() <= 5e-7 * want.abs(), "{}: threshold {th} vs torch {want}", c.name);
            let close = (0..n).any(|j| c.mask[j] != 0.0 && c.entropy[j] != th && (c.entropy[j] - th).abs() < 1e-5);
            assert!(!close, "{}: an entropy within 1e-5 of the threshold", c.name);
        }
        let p = PolicyLossParams { entropy_threshold: threshold, ..c.params };
        let up = |v: &[f32]| k.upload(v);
        let (lp, old, rf, adv, ent, mask) =
            (up(&c.logp), up(&c.logp_old), up(&c.logp_ref), up(&c.advantages), up(&c.entropy), up(&c.mask));
        let x = PolicyLossInputs {
            logp: &lp,
            logp_old: &old,
            logp_ref: Some(&rf),
            advantages: &adv,
            entropy: &ent,
            mask: &mask,
        };
        let (mut dl, mut dh, mut m) = (k.alloc(n), k.alloc(n), k.alloc(pm::LEN));
        k.policy_loss(&mut dl, &mut dh, &mut m, x, p);
        let (dl, dh, m) = (k.download(&dl), k.download(&dh), k.download(&m));
        let got = [m[pm::KL_MEAN], m[pm::ENTROPY_MEAN], m[pm::CLIP_FRAC_LOW], m[pm::CLIP_FRAC_HIGH]];
        let e_loss = (m[pm::LOSS] - c.loss).abs();
        let e_m = max_abs(&got, &c.metrics[..4]);
        let (e_dl, e_dh) = (rel_err(&dl, &c.dlogp, 1e-6), rel_err(&dh, &c.dentropy, 1e-6));
        println!(
            "{:24} loss {:+.6} (TRL {:+.6}) |dloss| {e_loss:.1e} metrics {e_m:.1e} dlogp {e_dl:.1e} dentropy {e_dh:.1e}",
            c.name, m[pm::LOSS], c.loss
        );
        assert!(e_loss < 2e-6, "{}: loss {} vs TRL {}", c.name, m[pm::LOSS], c.loss);
        assert!(e_m < 2e-6, "{}: kl, entropy, clip low/high {got:?} vs TRL {:?}", c.name, &c.metrics[..4]);
        assert!(e_dl < 1e-5, "{}: dlogp rel err {e_dl}", c.name);
        assert!(e_dh < 1e-5, "{}: dentropy rel err {e_dh}", c.name);
        for (w, e) in worst.iter_mut().zip([e_loss, e_m, e_dl, e_dh]) {
            *w = w.max(e);
        }
    }
    println!("worst: loss {:.1e} metrics {:.1e} dlogp {:.1e} dentropy {:.1e}", worst[0], worst[1], worst[2], worst[3]);
}

/// The objective's outputs on the host.
pub struct Run {
    pub loss: f32,
    pub metrics: Vec<f32>,
    pub grad_hidden: Vec<f32>,
    pub grad_weight: Vec<f32>,
}

/// Runs the objective on a case with `cfg` (grad_weight starts at zero).
pub fn run_case<K: Backend>(k: &K, case: &Case, cfg: ObjectiveConfig) -> gepa_dapo_grn::Result<Run> {
    let (n, c, v) = (case.s * case.l, case.c, case.v);
    let (hidden, weight) = (k.upload(&case.hidden), k.upload(&case.weight));
    let targets = k.upload_ids(&case.targets);
    let (mask, adv) = (k.upload(&case.mask), k.upload(&case.advantages));
    let (old, rf) = (k.upload(&case.logp_old), k.upload(&case.logp_ref));
    let batch = ObjectiveBatch::<K> {
        hidden: &hidden,
        weight: &weight,
        targets: &targets,
        mask: &mask,
        advantages: &adv,
        logp_old: &old,
        logp_ref: Some(&rf),
        s: case.s,
        l: case.l,
        c,
        v,
        norm: None,
    };
    let mut obj = DapoObjective::<K>::new(cfg)?;
    let (mut gh, mut gw) = (k.upload(&vec![f32::NAN; n * c]), k.alloc(v * c));
    let m = obj.forward_backward(k, &batch, &mut gh, &mut gw)?;
    let metrics = vec![
        m.loss,
        m.policy_loss,
        m.kl,
        m.entropy,
        m.clip_frac_low,
        m.clip_frac_high,
        m.ratio_mean,
        m.ratio_min,
        m.ratio_max,
        m.tokens,
    ];
    Ok(Run { loss: m.loss, metrics, grad_hidden: k.download(&gh), grad_weight: k.download(&gw) })
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// The golden tolerances of the whole objective, [loss, metrics, grad_hidden, grad_weight]
/// (see the module comment), and the TF32 ones: with tensor-core matmuls every operand of
/// hidden·Wᵀ (and of the two backward products) is rounded to 11 significant bits, ~4.9e-4
/// relative each, so at C = 16 the logits, hence the log-probs and ratios, move by ~1e-4 to
/// 1e-3 (measured on the emulator with TF32-rounded operands, worst over every case: loss
/// 2.2e-4, metrics 1.4e-3 (the ratio extremes), gradients 1.7e-3 / 2.0e-3 relative); the
/// bounds are 3.5-5x that. A wrong term still moves them by ≥ 1e-2.
const OBJECTIVE_F32: [f32; 4] = [1e-5, 1e-5, 2e-5, 2e-5];
const OBJECTIVE_TF32: [f32; 4] = [1e-3, 5e-3, 1e-2, 1e-2];

/// Every golden case: loss, gradients, metrics, and the log-prob op's logp / entropy.
pub fn golden<K: Backend>(k: K, prec: Precision) {
    let [t_loss, t_metrics, t_gh, t_gw] = prec.pick(OBJECTIVE_F32, OBJECTIVE_TF32);
    let mut worst = [0.0f32; 5];
    for case in load_cases() {
        let (n, v) = (case.s * case.l, case.v);
        // The fused op alone, on the full (N, V) logits.
        let mut logits = vec![0.0f32; n * v];
        for r in 0..n {
            for j in 0..v {
                logits[r * v + j] =
                    dot(&case.hidden[r * case.c..(r + 1) * case.c], &case.weight[j * case.c..(j + 1) * case.c]) as f32;
            }
        }
        let (mut lp, mut h) = (k.alloc(n), k.alloc(n));
        let ch = LogprobChunk { row0: 0, rows: n, v, inv_temperature: 1.0 / case.cfg.temperature };
        k.logprob_entropy_forward(&k.upload(&logits), &k.upload_ids(&case.targets), &mut lp, &mut h, ch);
        let (e_lp, e_h) = (max_abs(&k.download(&lp), &case.logp), max_abs(&k.download(&h), &case.entropy));
        assert!(e_lp < 1e-5 && e_h < 1e-5, "{}: logp err {e_lp}, entropy err {e_h}", case.name);

        let run = run_case(&k, &case, case.cfg.clone()).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let e_loss = (run.loss - case.loss).abs();
        let e_m = max_abs(&run.metrics, &case.metrics);
        let e_gh = rel_err(&run.grad_hidden, &case.grad_hidden, 1e-6);
        let e_gw = rel_err(&run.grad_weight, &case.grad_weight, 1e-6);
        println!(
            "{:24} loss {:+.6} (ref {:+.6}) |dloss| {e_loss:.1e} metrics {e_m:.1e} dhidden {e_gh:.1e} dW {e_gw:.1e} logp {e_lp:.1e} H {e_h:.1e}",
            case.name, run.loss, case.loss
        );
        assert!(e_loss < t_loss, "{}: loss {} vs {}", case.name, run.loss, case.loss);
        assert!(e_m < t_metrics, "{}: metrics {:?} vs {:?}", case.name, run.metrics, case.metrics);
        assert!(e_gh < t_gh, "{}: grad_hidden rel err {e_gh}", case.name);
        assert!(e_gw < t_gw, "{}: grad_weight rel err {e_gw}", case.name);
        for (w, e) in worst.iter_mut().zip([e_loss, e_m, e_gh, e_gw, e_lp.max(e_h)]) {
            *w = w.max(e);
        }
    }
    println!(
        "worst: loss {:.1e} metrics {:.1e} grad_hidden {:.1e} grad_weight {:.1e} logp/entropy {:.1e}",
        worst[0], worst[1], worst[2], worst[3], worst[4]
    );
}

/// The objective in bf16 mixed precision (hidden and the lm_head weight rounded to bf16 for
/// the products, f32 accumulation, f32 logits, log-softmax, loss and metrics) against
/// `cases_bf16.safetensors` (`tools/golden/gen_golden_bf16.py`: the same semantics in PyTorch,
/// gradients through the bf16 casts). Both sides round the same operands, so what differs is
/// where the gradients are rounded (autograd keeps dlogits f32 and rounds each gradient to
/// bf16; here dlogits is rounded for the backward products, whose results stay f32: the
/// generator measured that alternative at 6.1e-3 / 5.1e-3 of grad_hidden / grad_weight) and
/// f32 summation order. The forward rounds identically on both sides, so loss and metrics keep
/// f32 bounds. Measured on the emulator, worst of the 16 cases: loss 8.9e-8, metrics 4.8e-7,
/// grad_hidden 4.0e-3, grad_weight 5.1e-3 of the scale; the bounds are 1e-5, 1e-5 and 1.2e-2.
/// A wrong term still moves loss and metrics by ≥ 1e-2 and the gradients by ≥ 1e-1.
pub fn golden_bf16<K: Backend>(k: K) {
    let [t_loss, t_metrics, t_gh, t_gw] = OBJECTIVE_BF16;
    let mut worst = [0.0f32; 4];
    for case in load_cases_with("cases_bf16.safetensors") {
        let run = run_case(&k, &case, case.cfg.clone()).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let e = [
            (run.loss - case.loss).abs(),
            max_abs(&run.metrics, &case.metrics),
            rel_err(&run.grad_hidden, &case.grad_hidden, 1e-6),
            rel_err(&run.grad_weight, &case.grad_weight, 1e-6),
        ];
        println!("{:24} loss {:.1e} metrics {:.1e} dhidden {:.1e} dW {:.1e}", case.name, e[0], e[1], e[2], e[3]);
        assert!(e[0] < t_loss, "{}: loss {} vs {}", case.name, run.loss, case.loss);
        assert!(e[1] < t_metrics, "{}: metrics {:?} vs {:?}", case.name, run.metrics, case.metrics);
        assert!(e[2] < t_gh, "{}: grad_hidden rel err {}", case.name, e[2]);
        assert!(e[3] < t_gw, "{}: grad_weight rel err {}", case.name, e[3]);
        worst.iter_mut().zip(e).for_each(|(w, e)| *w = w.max(e));
    }
    println!(
        "worst: loss {:.1e} metrics {:.1e} grad_hidden {:.1e} grad_weight {:.1e}",
        worst[0], worst[1], worst[2], worst[3]
    );
}

/// The bf16 bounds of [`golden_bf16`]: [loss, metrics, grad_hidden, grad_weight].
const OBJECTIVE_BF16: [f32; 4] = [1e-5, 1e-5, 1.2e-2, 1.2e-2];

/// Chunk size changes only rounding (the order of the dW accumulation, the matmul kernel the
/// backend picks for a chunk's shape): chunks of 1, 3 (a short last chunk), N and more than N
/// rows agree to f32 rounding (1e-6 absolute on loss and metrics, 1e-6 / 1e-5 relative on
/// the hidden / weight gradients).
pub fn chunk_invariance<K: Backend>(k: K, _prec: Precision) {
    for case in
        load_cases().into_iter().filter(|c| c.name.starts_with("grpo_sequence") || c.name.starts_with("dapo_token"))
    {
        let n = case.s * case.l;
        let full = run_case(&k, &case, ObjectiveConfig { chunk_rows: n, ..case.cfg.clone() }).unwrap();
        // Same inputs, same chunking: bit-for-bit the same (fixed reduction orders).
        let again = run_case(&k, &case, ObjectiveConfig { chunk_rows: n, ..case.cfg.clone() }).unwrap();
        assert!(
            again.metrics == full.metrics
                && again.grad_hidden == full.grad_hidden
                && again.grad_weight == full.grad_weight
        );
        for chunk in [1, 3, n + 5] {
            let r = run_case(&k, &case, ObjectiveConfig { chunk_rows: chunk, ..case.cfg.clone() }).unwrap();
            // Not bit-identical: the matmul kernel for a 1-row chunk rounds differently.
            let e = max_abs(&r.metrics, &full.metrics);
            assert!(e < 1e-6, "{} chunk {chunk}: loss/metrics differ by {e}", case.name);
            assert!(
                rel_err(&r.grad_hidden, &full.grad_hidden, 1e-6) < 1e-6,
                "{} chunk {chunk}: grad_hidden",
                case.name
            );
            assert!(
                rel_err(&r.grad_weight, &full.grad_weight, 1e-6) < 1e-5,
                "{} chunk {chunk}: grad_weight",
                case.name
            );
        }
    }
}

/// A step of `h` in a central difference.
fn fd_check(what: &str, analytic: f32, numeric: f64) {
    fd_check_within(what, analytic, numeric, 2e-3, 2e-2);
}

/// `analytic` agrees with the central difference `numeric` to `abs` + `rel`·max(|a|, |n|).
fn fd_check_within(what: &str, analytic: f32, numeric: f64, abs: f64, rel: f64) {
    let a = analytic as f64;
    assert!(
        (a - numeric).abs() <= abs + rel * numeric.abs().max(a.abs()),
        "{what}: analytic {a:.6} vs numeric {numeric:.6}"
    );
}

/// Fused log-prob + entropy: d(Σ r1·logp + r2·H)/dlogits by central differences, with a
/// temperature ≠ 1, a chunk offset and a chunk buffer longer than the rows it covers.
pub fn logprob_gradcheck<K: Backend>(k: K, _prec: Precision) {
    let (rows, v, row0, total) = (3, 23, 2, 7);
    let inv_t = 1.0 / 0.8;
    let mut rng = Rng::new(21);
    let mut logits = randn(&mut rng, (rows + 1) * v, 1.5); // one spare row: must be ignored
    let targets: Vec<u32> = vec![0, 0, 22, 5, 5, 0, 0];
    let (r1, r2) = (randn(&mut rng, total, 1.0), randn(&mut rng, total, 1.0));
    let ids = k.upload_ids(&targets);
    let ch = LogprobChunk { row0, rows, v, inv_temperature: inv_t };
    let f = |l: &[f32]| -> f64 {
        let (mut lp, mut h) = (k.alloc(total), k.alloc(total));
        k.logprob_entropy_forward(&k.upload(l), &ids, &mut lp, &mut h, ch);
        let (lp, h) = (k.download(&lp), k.download(&h));
        assert!(lp[..row0].iter().chain(&lp[row0 + rows..]).all(|&x| x == 0.0), "rows outside the chunk untouched");
        dot(&lp, &r1) + dot(&h, &r2)
    };
    let mut g = k.upload(&logits);
    k.logprob_entropy_backward(&mut g, &ids, &k.upload(&r1), &k.upload(&r2), ch);
    let g = k.download(&g);
    assert_eq!(&g[rows * v..], &logits[rows * v..], "the spare row is not written");
    // Probe every coordinate of the chunk (69 values).
    let h = 1e-2f32;
    for i in 0..rows * v {
        let orig = logits[i];
        logits[i] = orig + h;
        let lp = f(&logits);
        logits[i] = orig - h;
        let lm = f(&logits);
        logits[i] = orig;
        fd_check(&format!("logprob dlogits[{i}]"), g[i], (lp - lm) / (2.0 * h as f64));
    }
    // Known values: uniform logits → logp = −ln V, H = ln V.
    let (mut lp, mut ent) = (k.alloc(1), k.alloc(1));
    let one = LogprobChunk { row0: 0, rows: 1, v, inv_temperature: 1.0 };
    k.logprob_entropy_forward(&k.upload(&vec![0.3; v]), &k.upload_ids(&[4]), &mut lp, &mut ent, one);
    let lnv = (v as f32).ln();
    assert!((k.download(&lp)[0] + lnv).abs() < 1e-6 && (k.download(&ent)[0] - lnv).abs() < 1e-6);
    // A target ≥ V is reported as NaN, not a panic.
    k.logprob_entropy_forward(&k.upload(&vec![0.3; v]), &k.upload_ids(&[v as u32]), &mut lp, &mut ent, one);
    assert!(k.download(&lp)[0].is_nan());
}

/// One finite-difference configuration of the policy-loss op.
struct FdCase {
    what: String,
    params: PolicyLossParams,
    advantages: Vec<f32>,
    /// Added to every token log-ratio of sequence i (moves ratios onto δ / the dual clip's
    /// side of their kinks).
    shift: [f32; 3],
    /// Perturb logp_old together with logp: the log-ratios, and so every factor TRL detaches
    /// (cispo's capped ratio, vespo's φ, both functions of them), stay fixed, and the central
    /// difference is the gradient TRL's autograd computes (the value's own derivative would
    /// include d(detached)/d logp).
    detached: bool,
}

/// The configurations [`policy_loss_gradcheck`] probes.
fn fd_cases(s: usize, l: usize) -> Vec<FdCase> {
    let adv = vec![0.7, -1.1, 0.4];
    let base = PolicyLossParams {
        eps_low: 0.2,
        eps_high: 0.28,
        beta: 0.1,
        entropy_coef: 0.05,
        max_completion_length: l + 2,
        ..PolicyLossParams::dapo(s, l)
    };
    let mut out = vec![];
    let case = |what: String, params, advantages: &Vec<f32>, shift, detached| FdCase {
        what,
        params,
        advantages: advantages.clone(),
        shift,
        detached,
    };
    for level in [IsLevel::Token, IsLevel::Sequence] {
        let p = PolicyLossParams { level, ..base };
        // Every loss whose value is differentiable as written, with TRL's default KL (k3 with
        // bias correction) and the entropy bonus.
        for loss_type in
            [LossType::Grpo, LossType::Bnpo, LossType::DrGrpo, LossType::Dapo, LossType::Luspo, LossType::Sapo]
        {
            let q = PolicyLossParams { loss_type, use_bias_correction_kl: true, ..p };
            out.push(case(format!("{loss_type:?}/{level:?}"), q, &adv, [0.0; 3], false));
        }
        // Every KL estimator with and without bias correction (a larger β so the KL dominates).
        for est in [KlEstimator::K1, KlEstimator::K2, KlEstimator::K3] {
            for bias in [false, true] {
                let q = PolicyLossParams { beta: 0.3, kl_estimator: est, use_bias_correction_kl: bias, ..p };
                out.push(case(format!("Dapo/{level:?}/{est:?} bias {bias}"), q, &adv, [0.0; 3], false));
            }
        }
        // delta and the dual clip, with sequence 1 (A < 0) shifted to ratios past both.
        let shift = [0.0, 0.835, 0.0];
        let q = PolicyLossParams { loss_type: LossType::Grpo, delta: Some(1.4), use_bias_correction_kl: true, ..p };
        out.push(case(format!("Grpo/{level:?}/delta"), q, &adv, shift, false));
        let q = PolicyLossParams { clip_ratio_c: Some(1.5), ..p };
        out.push(case(format!("Dapo/{level:?}/dual clip"), q, &adv, shift, false));
        // The entropy mask (threshold between the entropies; see the guard below).
        for loss_type in [LossType::Grpo, LossType::Dapo] {
            let q = PolicyLossParams { loss_type, entropy_threshold: Some(1.5), ..p };
            out.push(case(format!("{loss_type:?}/{level:?}/entropy mask"), q, &adv, [0.0; 3], false));
        }
        // A micro-batch's normalisers.
        for loss_type in [LossType::Grpo, LossType::Bnpo, LossType::DrGrpo, LossType::Dapo, LossType::Luspo] {
            let q = PolicyLossParams { loss_type, seq_norm: 7.0, token_norm: 20.0, accum: 3.0, ..p };
            out.push(case(format!("{loss_type:?}/{level:?}/norms"), q, &adv, [0.0; 3], false));
        }
        // cispo (ε_high = 1.1: the ratios 1.16 and 1.65 are capped, the others not) and vespo:
        // their policy gradient with the detached factors held, then their KL gradient alone
        // (A = 0 silences the policy term) with β ≠ 0 and bias correction.
        for loss_type in [LossType::Cispo, LossType::Vespo] {
            let q = PolicyLossParams { loss_type, eps_high: 1.1, beta: 0.0, ..p };
            out.push(case(format!("{loss_type:?}/{level:?}"), q, &adv, [0.0; 3], true));
            let q = PolicyLossParams { loss_type, eps_high: 1.1, use_bias_correction_kl: true, ..p };
            out.push(case(format!("{loss_type:?}/{level:?}/KL with A = 0"), q, &vec![0.0; 3], [0.0; 3], false));
        }
    }
    out
}

/// The points where a configuration's loss has a kink in the ratio ρ.
fn ratio_kinks(p: &PolicyLossParams) -> Vec<f32> {
    let mut k = vec![];
    if p.loss_type.is_clipped() {
        k.extend([1.0 - p.eps_low, 1.0 + p.eps_high]);
        k.extend(p.delta);
        k.extend(p.clip_ratio_c);
    }
    k
}

/// The policy-loss central differences' bound. The loss is an f64 sum rounded to f32 (a
/// relative 6e-8 of |loss| ≲ 1, so ≤ 3e-5 after dividing by 2h = 2e-3), and h² times the third
/// derivative (≲ 10 here) adds ~1e-5: 1e-4 absolute + 2e-3 relative. The gradients are
/// O(1e-2..1e-1), so a dropped term of the bias-corrected KL or a wrong normaliser fails.
const FD_ABS: f64 = 1e-4;
const FD_REL: f64 = 2e-3;

/// The policy loss: d loss/d logp and d loss/d entropy by central differences, for every loss
/// type × level with the KL and the entropy bonus, every KL estimator with and without bias
/// correction, delta, the dual clip, the entropy mask and a micro-batch's normalisers. Ratios
/// are kept ≥ 0.03 away from every kink of the configuration (clip bounds, δ, c) and entropies
/// ≥ 0.01 from the entropy threshold.
pub fn policy_loss_gradcheck<K: Backend>(k: K, _prec: Precision) {
    let (s, l) = (3, 5);
    let n = s * l;
    let mut rng = Rng::new(22);
    let mask: Vec<f32> = vec![1., 1., 1., 1., 1., 1., 1., 0., 0., 0., 1., 1., 1., 1., 0.];
    let logp: Vec<f32> = (0..n).map(|_| -0.5 - 2.0 * rng.uniform()).collect();
    // Token log-ratios drawn from values well inside / outside the bounds of both clips.
    let lr = [-0.7f32, -0.1, 0.05, 0.15, 0.5];
    let lref: Vec<f32> = (0..n).map(|i| logp[i] + 0.3 * rng.normal()).collect();
    let mut ent: Vec<f32> = (0..n).map(|_| 1.0 + rng.uniform()).collect();
    let (bm, br) = (k.upload(&mask), k.upload(&lref));
    let cases = fd_cases(s, l);
    let mut probed = 0;
    for fd in &cases {
        let (p, what) = (fd.params, &fd.what);
        let old: Vec<f32> = (0..n).map(|i| logp[i] - lr[(i * 7 + 3) % 5] - fd.shift[i / l]).collect();
        let ba = k.upload(&fd.advantages);
        let eval = |lp: &[f32], old: &[f32], en: &[f32]| {
            let (mut dl, mut dh, mut m) = (k.alloc(n), k.alloc(n), k.alloc(pm::LEN));
            let (lpb, bo, enb) = (k.upload(lp), k.upload(old), k.upload(en));
            let x = PolicyLossInputs {
                logp: &lpb,
                logp_old: &bo,
                logp_ref: Some(&br),
                advantages: &ba,
                entropy: &enb,
                mask: &bm,
            };
            k.policy_loss(&mut dl, &mut dh, &mut m, x, p);
            (k.download(&m), k.download(&dl), k.download(&dh))
        };
        let (m, dl, dh) = eval(&logp, &old, &ent);
        // Kink guard: every ratio (token or sequence) is away from the configuration's kinks.
        for i in 0..s {
            let on: Vec<usize> = (i * l..(i + 1) * l).filter(|&t| mask[t] != 0.0).collect();
            let seq = on.iter().map(|&t| logp[t] - old[t]).sum::<f32>() / on.len().max(1) as f32;
            for log_r in on.iter().map(|&t| logp[t] - old[t]).chain([seq]) {
                let r = log_r.exp();
                assert!(ratio_kinks(&p).iter().all(|b| (r - b).abs() > 0.03), "{what}: ratio {r} near a kink");
            }
        }
        if let Some(th) = p.entropy_threshold {
            let (above, below) = (0..n).filter(|&i| mask[i] != 0.0).fold((0, 0), |(a, b), i| {
                assert!((ent[i] - th).abs() > 0.01, "{what}: entropy {} near the threshold", ent[i]);
                if ent[i] >= th {
                    (a + 1, b)
                } else {
                    (a, b + 1)
                }
            });
            assert!(above > 0 && below > 0, "{what}: the threshold must split the tokens");
        }
        assert!(m[pm::LOSS].is_finite() && m[pm::MASK_SUM] == 11.0, "{what}");
        assert!(dl.iter().zip(&mask).all(|(&g, &mk)| mk != 0.0 || g == 0.0), "{what}: padding gets no gradient");
        let h = 1e-3f32;
        let (mut lp, mut lo) = (logp.clone(), old.clone());
        for i in (0..n).filter(|&i| mask[i] != 0.0) {
            let mut at = |d: f32| {
                lp[i] = logp[i] + d;
                if fd.detached {
                    lo[i] = old[i] + d;
                }
                let v = eval(&lp, &lo, &ent).0[pm::LOSS] as f64;
                (lp[i], lo[i]) = (logp[i], old[i]);
                v
            };
            let (a, b) = (at(h), at(-h));
            fd_check_within(&format!("{what} dlogp[{i}]"), dl[i], (a - b) / (2.0 * h as f64), FD_ABS, FD_REL);
        }
        for i in [0, 6, 12] {
            let o = ent[i];
            ent[i] = o + h;
            let a = eval(&logp, &old, &ent).0[pm::LOSS] as f64;
            ent[i] = o - h;
            let b = eval(&logp, &old, &ent).0[pm::LOSS] as f64;
            ent[i] = o;
            fd_check_within(&format!("{what} dentropy[{i}]"), dh[i], (a - b) / (2.0 * h as f64), FD_ABS, FD_REL);
        }
        probed += 11 + 3;
    }
    println!("policy loss: {} configurations, {probed} derivatives probed", cases.len());
}

/// A small valid batch for the bad-input tests.
pub fn small_case() -> Case {
    load_cases().into_iter().find(|c| c.name == "dapo_token_kl").unwrap()
}

fn expect_err<K: Backend>(k: &K, case: &Case, cfg: &ObjectiveConfig, needle: &str) {
    match run_case(k, case, cfg.clone()) {
        Ok(_) => panic!("expected an error mentioning `{needle}`"),
        Err(e) => assert!(e.to_string().contains(needle), "error `{e}` should mention `{needle}`"),
    }
}

/// Clear errors for every bad input; NaN in padding is fine.
pub fn bad_inputs<K: Backend>(k: K, prec: Precision) {
    let base = small_case();
    let cfg = base.cfg.clone();
    let n = base.s * base.l;
    // Reference: the valid case runs.
    run_case(&k, &base, cfg.clone()).unwrap();
    // Padding may hold anything.
    let mut c = small_case();
    for i in (0..n).filter(|&i| c.mask[i] == 0.0) {
        c.logp_old[i] = f32::NAN;
        c.logp_ref[i] = f32::INFINITY;
    }
    let ok = run_case(&k, &c, cfg.clone()).unwrap();
    assert!(ok.loss.is_finite() && ok.grad_hidden.iter().all(|x| x.is_finite()));

    let mut c = small_case();
    c.mask.fill(0.0);
    expect_err(&k, &c, &cfg, "all zero");
    let mut c = small_case();
    c.mask[0] = -1.0;
    expect_err(&k, &c, &cfg, "mask");
    let mut c = small_case();
    c.advantages[2] = f32::NAN;
    expect_err(&k, &c, &cfg, "advantages");
    let mut c = small_case();
    c.logp_old[0] = f32::INFINITY;
    expect_err(&k, &c, &cfg, "logp_old");
    let mut c = small_case();
    c.logp_ref[0] = f32::NAN;
    expect_err(&k, &c, &cfg, "logp_ref");
    // β = 0 never reads the reference.
    run_case(&k, &c, ObjectiveConfig { beta: 0.0, ..cfg.clone() }).unwrap();
    let mut c = small_case();
    c.hidden[3] = f32::NAN;
    expect_err(&k, &c, &cfg, "log-prob is not finite");
    let mut c = small_case();
    c.targets[0] = c.v as u32;
    expect_err(&k, &c, &cfg, "target id");
    // Mismatched lengths.
    let mut c = small_case();
    c.advantages.pop();
    expect_err(&k, &c, &cfg, "advantages has 3 values, expected 4");
    let mut c = small_case();
    c.logp_old.push(0.0);
    expect_err(&k, &c, &cfg, "logp_old has");
    let mut c = small_case();
    c.targets.pop();
    expect_err(&k, &c, &cfg, "targets has");
    let mut c = small_case();
    c.weight.truncate(c.weight.len() - 1);
    expect_err(&k, &c, &cfg, "weight has");
    // Bad configuration.
    expect_err(&k, &base, &ObjectiveConfig { chunk_rows: 0, ..cfg.clone() }, "chunk_rows");
    expect_err(&k, &base, &ObjectiveConfig { temperature: -1.0, ..cfg.clone() }, "temperature");
    // β ≠ 0 without a reference.
    let (hidden, weight) = (k.upload(&base.hidden), k.upload(&base.weight));
    let (targets, mask, adv, old) =
        (k.upload_ids(&base.targets), k.upload(&base.mask), k.upload(&base.advantages), k.upload(&base.logp_old));
    let batch = ObjectiveBatch::<K> {
        hidden: &hidden,
        weight: &weight,
        targets: &targets,
        mask: &mask,
        advantages: &adv,
        logp_old: &old,
        logp_ref: None,
        s: base.s,
        l: base.l,
        c: base.c,
        v: base.v,
        norm: None,
    };
    let mut obj = DapoObjective::<K>::new(cfg.clone()).unwrap();
    let (mut gh, mut gw) = (k.alloc(n * base.c), k.alloc(base.v * base.c));
    let e = obj.forward_backward(&k, &batch, &mut gh, &mut gw).unwrap_err().to_string();
    assert!(e.contains("logp_ref is missing"), "{e}");
    let mut obj = DapoObjective::<K>::new(ObjectiveConfig { beta: 0.0, ..cfg }).unwrap();
    obj.forward_backward(&k, &batch, &mut gh, &mut gw).unwrap();
    // token_logprobs agrees with the golden per-token values (through hidden·Wᵀ: TF32's
    // ~1e-3 on the logits under tensor-core matmuls, see OBJECTIVE_TF32).
    let (lp, _) = obj.token_logprobs(&k, &hidden, &weight, &targets, n, base.c, base.v).unwrap();
    let e = max_abs(&lp, &base.logp);
    assert!(e < prec.pick(1e-5, 5e-3), "token_logprobs err {e}");
}

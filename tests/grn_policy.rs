//! GRN as a training feature of the GPT-2 policy, on every backend (the CPU oracle and the
//! kernels under emulation): a zero-initialised GRN changes nothing (logits, loss, every other
//! gradient, a whole trainer step, bit for bit), the causal form never lets a token see a later
//! one, KV-cache decoding reproduces the full pass, γ and β get the gradient finite
//! differences of the DAPO objective give, and a checkpoint reloads GRN exactly.

mod common;

use common::{rel_err, tasks};
use gepa_dapo_grn::backend::cpu::CpuBackend;
use gepa_dapo_grn::backend::kernel::EmuBackend;
use gepa_dapo_grn::backend::Backend;
use gepa_dapo_grn::backend::{GrnParams, GrnSeqStats, GrnShape, Masked};
use gepa_dapo_grn::checkpoint::{load_model, save_model};
use gepa_dapo_grn::model::grn::{grn_sequence_forward, GrnConfig};
use gepa_dapo_grn::model::{Gpt2, Gpt2Config};
use gepa_dapo_grn::reward::{FeedbackMapping, FnScorer, Metrics, RewardMixer, ScoreInput};
use gepa_dapo_grn::rl::objective::{DapoObjective, ObjectiveBatch, ObjectiveConfig};
use gepa_dapo_grn::tokenizer::Tokenizer;
use gepa_dapo_grn::train::dapo::DapoTrainer;
use gepa_dapo_grn::train::dapo_config::DapoConfig;
use gepa_dapo_grn::util::rng::Rng;

const V: usize = 37;

fn on() -> GrnConfig {
    GrnConfig { enabled: true, ..GrnConfig::default() }
}

fn host_model(seed: u64) -> (Gpt2Config, Vec<Vec<f32>>) {
    let cfg = Gpt2Config::named("tiny", V).unwrap();
    let host = Gpt2::random(CpuBackend::new(Some(2)), cfg.clone(), seed).unwrap().to_host();
    (cfg, host)
}

/// A tiny random GPT-2 on `k` with a policy GRN whose γ, β are drawn (non-zero).
fn model_with_learned_grn<K: Backend>(k: K, seed: u64) -> Gpt2<K> {
    let (cfg, host) = host_model(seed);
    let mut m = Gpt2::from_host(k, cfg, &host).unwrap();
    assert!(m.add_policy_grn(on()).unwrap());
    let c = m.config().n_embd;
    let mut rng = Rng::new(seed ^ 0x6a7);
    let gamma: Vec<f32> = (0..c).map(|_| rng.normal()).collect();
    let beta: Vec<f32> = (0..c).map(|_| 0.5 * rng.normal()).collect();
    m.set_param("grn.gamma", &gamma).unwrap();
    m.set_param("grn.beta", &beta).unwrap();
    m
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Forward logits and a weighted-cross-entropy step: with a zero GRN they are the plain
/// model's bit for bit, every gradient but GRN's is too, and GRN's β gradient is not zero.
fn zero_grn_is_bit_identical<K: Backend>(k: K) {
    let (cfg, host) = host_model(3);
    let mut plain = Gpt2::from_host(k.clone(), cfg.clone(), &host).unwrap();
    let mut grn = Gpt2::from_host(k, cfg, &host).unwrap();
    assert!(grn.add_policy_grn(on()).unwrap());
    assert!(!grn.add_policy_grn(on()).unwrap(), "a second call keeps the GRN it has");
    assert_eq!(grn.specs().len(), plain.specs().len() + 2);
    let (b, t) = (3, 9);
    let mut rng = Rng::new(5);
    let ids: Vec<u32> = (0..b * t).map(|_| rng.below(V) as u32).collect();
    let targets: Vec<u32> = (0..b * t).map(|_| rng.below(V) as u32).collect();
    let w: Vec<f32> = (0..b * t).map(|i| if i % 4 == 0 { 0.0 } else { 0.05 }).collect();
    plain.forward(&ids, b, t).unwrap();
    grn.forward(&ids, b, t).unwrap();
    assert_eq!(bits(&plain.logits().unwrap()), bits(&grn.logits().unwrap()), "logits");
    let (l0, l1) = (
        plain.forward_backward(&ids, &targets, &w, b, t).unwrap(),
        grn.forward_backward(&ids, &targets, &w, b, t).unwrap(),
    );
    assert_eq!(l0.to_bits(), l1.to_bits(), "loss");
    for s in plain.specs() {
        assert_eq!(bits(&plain.grad(&s.name).unwrap()), bits(&grn.grad(&s.name).unwrap()), "gradient of {}", s.name);
    }
    let dbeta = grn.grad("grn.beta").unwrap();
    assert!(dbeta.iter().any(|&g| g != 0.0), "β gets a gradient at zero init");
}

/// With γ, β non-zero, changing the token at position 4 leaves every logit before it exactly
/// as it was and changes the logits from there on.
fn causal_grn_is_causal<K: Backend>(k: K) {
    let mut m = model_with_learned_grn(k, 4);
    let t = 10;
    let mut rng = Rng::new(9);
    let ids: Vec<u32> = (0..t).map(|_| rng.below(V) as u32).collect();
    m.forward(&ids, 1, t).unwrap();
    let before = m.logits().unwrap();
    let mut changed = ids.clone();
    changed[4] = (ids[4] + 1) % V as u32;
    m.forward(&changed, 1, t).unwrap();
    let after = m.logits().unwrap();
    assert_eq!(bits(&before[..4 * V]), bits(&after[..4 * V]), "positions before the change");
    for p in 4..t {
        assert_ne!(before[p * V..(p + 1) * V], after[p * V..(p + 1) * V], "position {p} sees the change");
    }
}

/// Prefill + decode steps with a learned GRN give the full forward's logits to f32 rounding
/// (as without GRN: 1e-5 of the logits' scale, see tests/rollout.rs), with ragged prompts and
/// sequences dropping out.
fn kv_decode_matches_full_forward<K: Backend>(k: K) {
    let mut m = model_with_learned_grn(k, 6);
    let mut rng = Rng::new(12);
    let (lens, steps) = ([3usize, 6, 1], 5usize);
    let seqs: Vec<Vec<u32>> = lens.iter().map(|&p| (0..p + steps).map(|_| rng.below(V) as u32).collect()).collect();
    let want: Vec<Vec<f32>> = seqs
        .iter()
        .map(|s| {
            m.forward(s, 1, s.len()).unwrap();
            m.logits().unwrap()
        })
        .collect();
    let prompts: Vec<Vec<u32>> = seqs.iter().zip(lens).map(|(s, p)| s[..p].to_vec()).collect();
    let mut cache = m.kv_cache(lens.len(), 6 + steps).unwrap();
    let got = m.prefill(&mut cache, &prompts).unwrap();
    let mut worst = 0.0f32;
    for (i, &p) in lens.iter().enumerate() {
        worst = worst.max(rel_err(&got[i * V..(i + 1) * V], &want[i][(p - 1) * V..p * V], 1e-3));
    }
    for step in 0..steps - 1 {
        let active: Vec<usize> = (0..lens.len()).filter(|&i| step < steps - 1 - i).collect();
        let tokens: Vec<u32> = active.iter().map(|&i| seqs[i][lens[i] + step]).collect();
        let got = m.decode_step(&mut cache, &active, &tokens).unwrap();
        for (r, &i) in active.iter().enumerate() {
            let at = lens[i] + step;
            worst = worst.max(rel_err(&got[r * V..(r + 1) * V], &want[i][at * V..(at + 1) * V], 1e-3));
        }
    }
    // A second prefill into the same cache starts every sequence's running sums afresh.
    let again = m.prefill(&mut cache, &prompts).unwrap();
    for (i, &p) in lens.iter().enumerate() {
        worst = worst.max(rel_err(&again[i * V..(i + 1) * V], &want[i][(p - 1) * V..p * V], 1e-3));
    }
    println!("max relative logit difference, cached vs full forward with GRN: {worst:.2e}");
    assert!(worst < 1e-5, "cached logits differ from the full forward by {worst}");
}

/// The DAPO objective on the model's hidden state (as the trainer computes it): γ and β's
/// gradients against central differences of the loss.
fn gamma_beta_gradients_match_finite_differences<K: Backend>(k: K) {
    let mut m = model_with_learned_grn(k, 7);
    let (s, t, c) = (3usize, 8usize, m.config().n_embd);
    let mut rng = Rng::new(21);
    let ids: Vec<u32> = (0..s * t).map(|_| rng.below(V) as u32).collect();
    // Next-token targets; the last three positions of each row are its "completion".
    let targets: Vec<u32> = (0..s * t).map(|i| if i % t + 1 < t { ids[i + 1] } else { 0 }).collect();
    let mask: Vec<f32> = (0..s * t).map(|i| if (t - 4..t - 1).contains(&(i % t)) { 1.0 } else { 0.0 }).collect();
    let adv = [1.0f32, -0.7, 0.4];
    let logp_old: Vec<f32> = (0..s * t).map(|_| -3.6 + 0.05 * rng.normal()).collect();
    // Clip ranges wide enough that no ratio is clipped (the clip's kinks would defeat central
    // differences); β = 0 (the KL to a reference is tested with the objective).
    let cfg = ObjectiveConfig { chunk_rows: 5, eps_low: 0.99, eps_high: 100.0, ..ObjectiveConfig::default() };
    let loss_at = |m: &mut Gpt2<K>| -> f64 {
        let mut obj = DapoObjective::new(cfg.clone()).unwrap();
        m.forward_backward_with(&ids, s, t, |h| {
            let (tg, mk, ad, lo) = (
                h.backend.upload_ids(&targets),
                h.backend.upload(&mask),
                h.backend.upload(&adv),
                h.backend.upload(&logp_old),
            );
            let batch = ObjectiveBatch {
                hidden: h.hidden,
                weight: h.wte,
                targets: &tg,
                mask: &mk,
                advantages: &ad,
                logp_old: &lo,
                logp_ref: None,
                s,
                l: t,
                c,
                v: V,
                norm: None,
            };
            obj.forward_backward(h.backend, &batch, h.dhidden, h.dwte)
        })
        .unwrap()
        .loss as f64
    };
    m.zero_grad();
    loss_at(&mut m);
    // Read both gradients now: every loss evaluation below adds into them again.
    let grads = [m.grad("grn.gamma").unwrap(), m.grad("grn.beta").unwrap()];
    for (name, grad) in ["grn.gamma", "grn.beta"].into_iter().zip(grads) {
        let p0 = m.param(name).unwrap();
        let h = 1e-2f32;
        for j in [0usize, 5, 17, 40, c - 1] {
            let mut p = p0.clone();
            p[j] = p0[j] + h;
            m.set_param(name, &p).unwrap();
            let lp = loss_at(&mut m);
            p[j] = p0[j] - h;
            m.set_param(name, &p).unwrap();
            let lm = loss_at(&mut m);
            m.set_param(name, &p0).unwrap();
            let numeric = (lp - lm) / (2.0 * h as f64);
            let a = grad[j] as f64;
            // f32 losses of ~1 and h = 1e-2: rounding adds ~1e-5 to the difference quotient;
            // O(h²) truncation ~1e-4 relative. A wrong or missing term is O(1) off.
            assert!(
                (a - numeric).abs() <= 2e-4 + 2e-2 * numeric.abs().max(a.abs()),
                "{name}[{j}]: analytic {a:.6} vs numeric {numeric:.6}"
            );
        }
    }
}

macro_rules! per_backend {
    ($modname:ident, $backend:expr) => {
        mod $modname {
            use super::*;
            #[test]
            fn zero_init_grn_is_bit_identical() {
                zero_grn_is_bit_identical($backend);
            }
            #[test]
            fn causal_grn_never_lets_a_later_token_change_an_earlier_output() {
                causal_grn_is_causal($backend);
            }
            #[test]
            fn kv_cache_decoding_equals_the_full_forward_with_grn() {
                kv_decode_matches_full_forward($backend);
            }
            #[test]
            fn gamma_and_beta_gradients_through_the_dapo_objective_match_finite_differences() {
                gamma_beta_gradients_match_finite_differences($backend);
            }
            #[test]
            fn a_trainer_step_with_grn_at_zero_init_equals_the_step_without_and_grn_learns() {
                trainer_step_with_zero_grn_is_bit_identical($backend);
            }
        }
    };
}

#[test]
fn the_sequence_wide_form_would_let_a_later_token_change_an_earlier_output() {
    // Why the policy head needs the causal form: the sequence-wide statistic at position 0
    // moves when position 4 changes (so the causality test above would catch it).
    let (t, c) = (6, 4);
    let mut rng = Rng::new(2);
    let x: Vec<f32> = (0..t * c).map(|_| rng.normal()).collect();
    let (gamma, beta) = (vec![0.8; c], vec![0.1; c]);
    let run = |x: &[f32]| {
        let (mut out, mut g, mut mean, mut n) = (vec![0.0; t * c], vec![0.0; c], vec![0.0; 1], vec![0.0; c]);
        let stats = GrnSeqStats { g: &mut g[..], mean: &mut mean[..], n: &mut n[..] };
        let mask = vec![1.0; t];
        let p = GrnParams { gamma: &gamma[..], beta: &beta[..] };
        grn_sequence_forward(&mut out, stats, Masked { x, mask: &mask[..] }, p, GrnShape { b: 1, t, c, eps: 1e-6 });
        out
    };
    let mut y = x.clone();
    y[4 * c] += 3.0;
    assert_ne!(run(&x)[..c], run(&y)[..c]);
}

/// Completions the scorer saw, in order.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

fn digits_trainer<K: Backend>(k: K, grn: bool, out: &std::path::Path, seen: Seen) -> DapoTrainer<K> {
    let tok = Tokenizer::default_char();
    let cfg = Gpt2Config::named("tiny", tok.vocab_size()).unwrap();
    let host = Gpt2::random(CpuBackend::new(Some(2)), cfg.clone(), 3).unwrap().to_host();
    let model = Gpt2::from_host(k, cfg, &host).unwrap();
    let mut cfg = DapoConfig {
        steps: 2,
        batch_size: 3,
        group_size: 4,
        learning_rate: 1e-3,
        output_dir: out.to_path_buf(),
        seed: 11,
        grn: GrnConfig { enabled: grn, ..GrnConfig::default() },
        ..DapoConfig::default()
    };
    cfg.objective.beta = 0.04;
    cfg.sampling.max_new_tokens = 5;
    let scorer = FnScorer::new("digits", move |x: &ScoreInput<'_>| {
        seen.lock().unwrap().push(x.completion.to_string());
        let n = x.completion.chars().count().max(1) as f64;
        let d = x.completion.chars().filter(char::is_ascii_digit).count() as f64;
        Ok(Metrics::from([("digits".to_string(), d / n)]))
    });
    let mixer = RewardMixer::from_weights([("digits", 1.0)]).unwrap();
    DapoTrainer::new(model, tok, Box::new(scorer), FeedbackMapping::identity(), mixer, cfg).unwrap()
}

/// One trainer step with and without a zero GRN on backend `k`.
fn trainer_step_with_zero_grn_is_bit_identical<K: Backend>(k: K) {
    // One optimizer step per RL step (μ = 1, one minibatch), β > 0 so the reference (a copy
    // with its GRN) runs too: rollouts, rewards, the loss and every non-GRN gradient are bit
    // for bit those of the run without GRN; γ and β leave zero.
    let data = tasks(12);
    let (d0, d1) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (s0, s1) = (Seen::default(), Seen::default());
    let (mut plain, mut grn) =
        (digits_trainer(k.clone(), false, d0.path(), s0.clone()), digits_trainer(k, true, d1.path(), s1.clone()));
    assert!(grn.model().has_policy_grn() && !plain.model().has_policy_grn());
    let (a, b) = (plain.step(&data).unwrap(), grn.step(&data).unwrap());
    assert_eq!(*s0.lock().unwrap(), *s1.lock().unwrap(), "rollouts");
    assert_eq!(a.generation, b.generation, "lengths");
    let rewards = |r: &gepa_dapo_grn::train::dapo::StepRecord| {
        r.gepa.iter().map(|g| g.rewards["digits"].to_bits()).collect::<Vec<_>>()
    };
    assert_eq!(rewards(&a), rewards(&b), "rewards");
    assert_eq!(a.rl.loss.to_bits(), b.rl.loss.to_bits(), "loss");
    for s in plain.model().specs() {
        let (x, y) = (plain.model().grad(&s.name).unwrap(), grn.model().grad(&s.name).unwrap());
        assert_eq!(bits(&x), bits(&y), "gradient of {}", s.name);
    }
    let moved = |n: &str| grn.model().param(n).unwrap().iter().any(|&v| v != 0.0);
    assert!(moved("grn.gamma") && moved("grn.beta"), "GRN learns from the first step");
}

#[test]
fn a_checkpoint_reloads_grn_exactly_and_names_its_tensors() {
    let m = model_with_learned_grn(CpuBackend::new(Some(2)), 8);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ckpt");
    save_model(&out, &m, None).unwrap();
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["grn"]["enabled"], true);
    assert_eq!(cfg["grn"]["apply_to_policy"], true);
    let names = gepa_dapo_grn::checkpoint::TensorFile::open(&out.join("model.safetensors")).unwrap().names();
    assert!(names.iter().any(|n| n == "grn.gamma") && names.iter().any(|n| n == "grn.beta"), "{names:?}");
    let back = load_model(&out, CpuBackend::new(Some(2))).unwrap();
    assert_eq!(back.config(), m.config());
    for name in ["grn.gamma", "grn.beta", "wte.weight"] {
        assert_eq!(bits(&back.param(name).unwrap()), bits(&m.param(name).unwrap()), "{name}");
    }
    // The eps of a GRN a model has cannot be changed under it.
    let mut back = back;
    assert!(back.add_policy_grn(GrnConfig { eps: 1e-3, ..on() }).is_err());
    // Weights saved with a GRN under a config without one are refused, naming the tensor.
    let mut raw = cfg.clone();
    raw.as_object_mut().unwrap().remove("grn");
    std::fs::write(out.join("config.json"), raw.to_string()).unwrap();
    let err = load_model(&out, CpuBackend::new(Some(2))).err().expect("refused").to_string();
    assert!(err.contains("grn.beta") || err.contains("grn.gamma"), "{err}");
}

per_backend!(cpu, CpuBackend::new(Some(2)));
per_backend!(emu, EmuBackend::emulated());

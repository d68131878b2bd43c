//! The DAPO trainer end to end on the CPU: a step does what the log says, a resumed run equals
//! the uninterrupted one bit for bit, and bad settings are named errors.

use gepa_dapo_grn::backend::cpu::CpuBackend;
use gepa_dapo_grn::backend::kernel_backend::EmuBackend;
use gepa_dapo_grn::backend::LossType;
use gepa_dapo_grn::data::arithmetic::addition_problems;
use gepa_dapo_grn::data::{Task, TaskDataset};
use gepa_dapo_grn::model::{Gpt2, Gpt2Config};
use gepa_dapo_grn::reward::{FeedbackMapping, FnScorer, MathScorer, Metrics, RewardMixer, ScoreInput, Scorer};
use gepa_dapo_grn::rl::curriculum::CurriculumConfig;
use gepa_dapo_grn::rl::safety::SafetyConfig;
use gepa_dapo_grn::tokenizer::Tokenizer;
use gepa_dapo_grn::train::dapo::{DapoTrainer, StepRecord};
use gepa_dapo_grn::train::dapo_config::DapoConfig;
use std::path::Path;

fn tasks(n: usize) -> TaskDataset {
    let (train, _) = addition_problems(1);
    TaskDataset::from_tasks(
        train
            .into_iter()
            .take(n)
            .map(|(p, a)| Task {
                prompt: p.clone(),
                task_id: if p.len() > 5 { "long".into() } else { "short".into() },
                record: serde_json::json!({ "prompt": p, "answer": a }),
            })
            .collect(),
    )
}

fn config(out: &Path) -> DapoConfig {
    let mut c = DapoConfig {
        steps: 4,
        batch_size: 3,
        group_size: 4,
        learning_rate: 1e-3,
        min_learning_rate: 1e-4,
        warmup_steps: 1,
        num_iterations: 2,
        mini_batches: 2,
        curriculum: Some(CurriculumConfig::default()),
        output_dir: out.to_path_buf(),
        seed: 11,
        ..DapoConfig::default()
    };
    c.objective.beta = 0.04;
    c.sampling.max_new_tokens = 4;
    c
}

fn trainer(out: &Path) -> DapoTrainer<CpuBackend> {
    let mixer =
        RewardMixer::from_weights([("correctness", 1.0), ("reasoning_quality", 0.5), ("format_penalty", -0.25)])
            .unwrap();
    trainer_with(out, Box::new(MathScorer), mixer)
}

fn trainer_with(out: &Path, scorer: Box<dyn Scorer>, mixer: RewardMixer) -> DapoTrainer<CpuBackend> {
    let tok = Tokenizer::default_char();
    let cfg = Gpt2Config::named("tiny", tok.vocab_size()).unwrap();
    let model = Gpt2::random(CpuBackend::new(Some(2)), cfg, 3).unwrap();
    DapoTrainer::new(model, tok, scorer, FeedbackMapping::identity(), mixer, config(out)).unwrap()
}

/// A reward a random model's output varies in: the share of digits in the completion.
fn digit_share() -> Box<dyn Scorer> {
    Box::new(FnScorer::new("digits", |x: &ScoreInput<'_>| {
        let n = x.completion.chars().count().max(1) as f64;
        let d = x.completion.chars().filter(char::is_ascii_digit).count() as f64;
        Ok(Metrics::from([("digits".to_string(), d / n)]))
    }))
}

fn weights(t: &DapoTrainer<CpuBackend>) -> Vec<Vec<u32>> {
    t.model().to_host().iter().map(|p| p.iter().map(|x| x.to_bits()).collect()).collect()
}

fn summary(r: &StepRecord) -> (u64, Vec<u64>, u32, u32) {
    let rewards = r.gepa.iter().flat_map(|g| g.rewards.values().map(|v| v.to_bits())).collect();
    (r.step, rewards, r.rl.loss.to_bits(), r.rl.grad_norm.to_bits())
}

#[test]
fn resuming_from_a_checkpoint_repeats_the_uninterrupted_run_bit_for_bit() {
    let data = tasks(40);
    let dir = tempfile::tempdir().unwrap();

    let straight_dir = dir.path().join("straight");
    let mut straight = trainer(&straight_dir);
    let mut want = Vec::new();
    for _ in 0..4 {
        want.push(summary(&straight.step(&data).unwrap()));
    }
    let rec = &want[3];
    assert_eq!(rec.0, 4);

    let split_dir = dir.path().join("split");
    let mut first = trainer(&split_dir);
    first.save_reference().unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(summary(&first.step(&data).unwrap()));
    }
    let ckpt = first.save().unwrap();
    assert!(ckpt.ends_with("checkpoint-2"), "{}", ckpt.display());
    drop(first);

    let mut second = trainer(&split_dir);
    second.resume(&ckpt).unwrap();
    assert_eq!(second.steps_done(), 2);
    for _ in 0..2 {
        got.push(summary(&second.step(&data).unwrap()));
    }
    assert_eq!(got, want, "per-step rewards, losses and gradient norms");
    assert_eq!(weights(&second), weights(&straight), "final weights");
}

#[test]
fn a_step_reports_consistent_numbers_and_the_policy_moves() {
    let data = tasks(20);
    let dir = tempfile::tempdir().unwrap();
    let mut t = trainer(dir.path());
    let r = t.step(&data).unwrap();
    assert_eq!(r.gepa.len(), 12, "batch 3 × group 4");
    for g in &r.gepa {
        for key in ["correctness", "reasoning_quality", "format_penalty", "brevity"] {
            assert!(g.rewards.contains_key(key), "missing {key}: {:?}", g.rewards);
        }
    }
    // A random policy's completions are all wrong: every group's rewards are equal, the
    // advantages are zero, and so is the gradient (no weight decay in the default config).
    assert_eq!(r.rl.grad_norm, 0.0);

    let mut t = trainer_with(dir.path(), digit_share(), RewardMixer::from_weights([("digits", 1.0)]).unwrap());
    let before = weights(&t);
    let r = t.step(&data).unwrap();
    assert!(r.rl.lr > 0.0 && r.rl.grad_norm.is_finite() && r.rl.kl >= 0.0);
    assert!((r.rl.kl_coef - 0.04).abs() < 1e-7, "beta is the f32 0.04");
    assert!(r.tokens > 0 && r.tokens <= 12 * 4);
    assert_ne!(weights(&t), before, "an update changed the weights");
    let line = serde_json::to_value(&r).unwrap();
    for key in ["step", "gepa", "rl", "generation", "timing"] {
        assert!(line.get(key).is_some(), "log record lacks `{key}`: {line}");
    }
    let eval = t.evaluate(&data, 10).unwrap();
    assert_eq!(eval.n, 10);
    assert_eq!(eval.accuracy, None, "no `correctness` metric, no accuracy");
    assert!((0.0..=1.0).contains(&eval.metrics["digits"]));
}

#[test]
fn bad_settings_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let tok = Tokenizer::default_char();
    let cfg = Gpt2Config::named("tiny", tok.vocab_size()).unwrap();
    let mk = |c: DapoConfig| {
        let model = Gpt2::random(CpuBackend::new(Some(1)), cfg.clone(), 3).unwrap();
        let mixer = RewardMixer::from_weights([("correctness", 1.0)]).unwrap();
        DapoTrainer::new(model, tok.clone(), Box::new(MathScorer), FeedbackMapping::identity(), mixer, c)
            .err()
            .map(|e| e.to_string())
    };
    let base = config(dir.path());
    assert!(mk(DapoConfig { group_size: 0, ..base.clone() }).unwrap().contains("group_size"));
    assert!(mk(DapoConfig { mini_batches: 100, ..base.clone() }).unwrap().contains("mini_batches"));
    let mut c = base.clone();
    c.sampling.top_p = 0.0;
    assert!(mk(c).unwrap().contains("top_p"));
    let mixer_bad = {
        let model = Gpt2::random(CpuBackend::new(Some(1)), cfg.clone(), 3).unwrap();
        let mixer = RewardMixer::from_weights([("no_such_metric", 1.0)]).unwrap();
        DapoTrainer::new(model, tok.clone(), Box::new(MathScorer), FeedbackMapping::identity(), mixer, base)
            .err()
            .unwrap()
            .to_string()
    };
    assert!(mixer_bad.contains("no_such_metric"), "{mixer_bad}");
}

#[test]
fn a_tripped_safety_rule_skips_the_update_and_is_reported() {
    let data = tasks(20);
    let dir = tempfile::tempdir().unwrap();
    let rules: SafetyConfig = serde_json::from_str(
        r#"{"rules": [{"name": "always", "metric": "reward_mean", "when": {"above": -1e9}, "action": "skip_update"},
                      {"name": "tags", "metric": "rewards.digits", "when": {"below": 2.0}, "action": {"scale_lr": 0.5}}]}"#,
    )
    .unwrap();
    let tok = Tokenizer::default_char();
    let model =
        Gpt2::random(CpuBackend::new(Some(2)), Gpt2Config::named("tiny", tok.vocab_size()).unwrap(), 3).unwrap();
    let cfg = DapoConfig { safety: Some(rules), ..config(dir.path()) };
    let mixer = RewardMixer::from_weights([("digits", 1.0)]).unwrap();
    let mut t = DapoTrainer::new(model, tok, digit_share(), FeedbackMapping::identity(), mixer, cfg).unwrap();
    let before = weights(&t);
    let r = t.step(&data).unwrap();
    assert!(r.skipped_update);
    let names: Vec<&str> = r.safety.iter().map(|e| e.rule.as_str()).collect();
    assert_eq!(names, ["always", "tags"]);
    assert_eq!(weights(&t), before, "a skipped update leaves the weights alone");
}

#[test]
fn micro_batches_accumulate_to_the_minibatch_gradient() {
    // One step with the whole batch in one pass, and the same step in micro-batches of one
    // and of five sequences: the same accumulated gradient up to f32 summation order, for a
    // token-mean and a per-sequence loss.
    for loss_type in [LossType::Dapo, LossType::Grpo] {
        let data = tasks(20);
        let dir = tempfile::tempdir().unwrap();
        let run = |micro: usize| {
            let mixer = RewardMixer::from_weights([("digits", 1.0)]).unwrap();
            let tok = Tokenizer::default_char();
            let model = Gpt2::random(CpuBackend::new(Some(2)), Gpt2Config::named("tiny", tok.vocab_size()).unwrap(), 3)
                .unwrap();
            let mut cfg =
                DapoConfig { micro_batch_size: micro, num_iterations: 1, mini_batches: 1, ..config(dir.path()) };
            cfg.objective.loss_type = loss_type;
            cfg.max_grad_norm = 0.0;
            let mut t = DapoTrainer::new(model, tok, digit_share(), FeedbackMapping::identity(), mixer, cfg).unwrap();
            let r = t.step(&data).unwrap();
            // The gradients of the step's (only) optimizer step are still in the model.
            let names: Vec<String> = t.model().specs().iter().map(|s| s.name.clone()).collect();
            (names.iter().map(|n| t.model().grad(n).unwrap()).collect::<Vec<_>>(), r.rl.grad_norm)
        };
        let (whole, norm) = run(0);
        for micro in [1, 5] {
            let (parts, _) = run(micro);
            let mut worst = 0.0f32;
            for (a, b) in whole.iter().zip(&parts) {
                let scale = a.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-12);
                worst = worst.max(a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) / scale);
            }
            // Same sums in another order and grouping, plus one rescale per pass: f32 rounding,
            // ~1e-6 of each tensor's scale; 1e-4 leaves room and still catches a wrong weight.
            assert!(worst < 1e-4, "{loss_type:?} micro {micro}: worst gradient difference {worst} of the scale");
        }
        assert!(norm > 0.0);
    }
}

#[test]
fn a_step_on_the_emulated_kernel_backend_matches_the_cpu() {
    // The whole step — KV-cache rollouts, the reference pass, the chunked objective, AdamW —
    // through the kernels under emulation, against the CPU backend. Same seeds, logits equal to
    // rounding: the same tokens are sampled (a draw would have to fall within ~1e-7 of a CDF
    // boundary to differ), so rewards match exactly and the update to rounding.
    let data = tasks(20);
    let dir = tempfile::tempdir().unwrap();
    let tok = Tokenizer::default_char();
    let cfg = Gpt2Config::named("tiny", tok.vocab_size()).unwrap();
    let host = Gpt2::random(CpuBackend::new(Some(2)), cfg.clone(), 3).unwrap().to_host();
    let mixer = || RewardMixer::from_weights([("digits", 1.0)]).unwrap();
    let mut conf = config(dir.path());
    conf.batch_size = 2;
    conf.steps = 1;
    let mut cpu = DapoTrainer::new(
        Gpt2::from_host(CpuBackend::new(Some(2)), cfg.clone(), &host).unwrap(),
        tok.clone(),
        digit_share(),
        FeedbackMapping::identity(),
        mixer(),
        conf.clone(),
    )
    .unwrap();
    let mut emu = DapoTrainer::new(
        Gpt2::from_host(EmuBackend::emulated(), cfg, &host).unwrap(),
        tok,
        digit_share(),
        FeedbackMapping::identity(),
        mixer(),
        conf,
    )
    .unwrap();
    let (a, b) = (cpu.step(&data).unwrap(), emu.step(&data).unwrap());
    let rewards = |r: &StepRecord| r.gepa.iter().map(|g| g.rewards["digits"]).collect::<Vec<_>>();
    assert_eq!(rewards(&a), rewards(&b), "same completions");
    assert!((a.rl.loss - b.rl.loss).abs() <= 1e-4 * a.rl.loss.abs().max(1e-3), "{} vs {}", a.rl.loss, b.rl.loss);
    assert!(
        (a.rl.grad_norm - b.rl.grad_norm).abs() <= 1e-4 * a.rl.grad_norm,
        "{} vs {}",
        a.rl.grad_norm,
        b.rl.grad_norm
    );
    let (wa, wb) = (cpu.model().to_host(), emu.model().to_host());
    let worst =
        wa.iter().zip(&wb).flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs())).fold(0.0f32, f32::max);
    // Adam's first step is ≈ lr·sign(g) per weight (lr 1e-3 here): agreement to 1e-5 means no
    // gradient entry changed sign between the backends.
    assert!(worst < 1e-5, "weights differ by {worst}");
}

//! The DAPO trainer end to end on the CPU: a step does what the log says, a resumed run equals
//! the uninterrupted one bit for bit, and bad settings are named errors.

mod common;

use common::tasks;
use gepa_dapo_grn::backend::cpu::CpuBackend;
use gepa_dapo_grn::backend::kernel::EmuBackend;
use gepa_dapo_grn::backend::LossType;
use gepa_dapo_grn::data::{Task, TaskDataset};
use gepa_dapo_grn::model::{Gpt2, Gpt2Config};
use gepa_dapo_grn::optim::LrDecay;
use gepa_dapo_grn::reward::{FeedbackMapping, FnScorer, MathScorer, Metrics, RewardMixer, ScoreInput, Scorer};
use gepa_dapo_grn::rl::curriculum::CurriculumConfig;
use gepa_dapo_grn::rl::safety::SafetyConfig;
use gepa_dapo_grn::tokenizer::Tokenizer;
use gepa_dapo_grn::train::dapo::{DapoTrainer, StepRecord};
use gepa_dapo_grn::train::dapo_config::DapoConfig;
use std::path::Path;

fn config(out: &Path) -> DapoConfig {
    let mut c = DapoConfig {
        steps: 4,
        batch_size: 3,
        group_size: 4,
        learning_rate: 1e-3,
        lr_scheduler_type: LrDecay::Cosine,
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
    trainer_for(config(out), scorer, mixer).unwrap()
}

/// A trainer on the tiny random GPT-2 (seed 3) with the char tokenizer and settings `cfg`.
fn trainer_for(
    cfg: DapoConfig,
    scorer: Box<dyn Scorer>,
    mixer: RewardMixer,
) -> gepa_dapo_grn::Result<DapoTrainer<CpuBackend>> {
    let tok = Tokenizer::default_char();
    let model =
        Gpt2::random(CpuBackend::new(Some(2)), Gpt2Config::named("tiny", tok.vocab_size()).unwrap(), 3).unwrap();
    DapoTrainer::new(model, tok, scorer, FeedbackMapping::identity(), mixer, cfg)
}

/// [`trainer_for`] scored by the share of digits, weight 1.
fn digits_trainer(cfg: DapoConfig) -> DapoTrainer<CpuBackend> {
    trainer_for(cfg, digit_share(), RewardMixer::from_weights([("digits", 1.0)]).unwrap()).unwrap()
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
    let mut t = digits_trainer(DapoConfig { safety: Some(rules), ..config(dir.path()) });
    let before = weights(&t);
    let r = t.step(&data).unwrap();
    assert!(r.skipped_update);
    let names: Vec<&str> = r.safety.iter().map(|e| e.rule.as_str()).collect();
    assert_eq!(names, ["always", "tags"]);
    assert_eq!(weights(&t), before, "a skipped update leaves the weights alone");

    // A rule on a metric no step produces (a typo) is an error at the first step, not a rule
    // that silently never trips.
    let rules: SafetyConfig = serde_json::from_str(
        r#"{"rules": [{"name": "typo", "metric": "rewards.digitz", "when": {"below": 0.5}, "action": "skip_update"}]}"#,
    )
    .unwrap();
    let mut t = digits_trainer(DapoConfig { safety: Some(rules), ..config(dir.path()) });
    let e = t.step(&data).unwrap_err().to_string();
    assert!(e.contains("typo") && e.contains("rewards.digitz") && e.contains("rewards.digits"), "{e}");
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
            let mut cfg =
                DapoConfig { micro_batch_size: micro, num_iterations: 1, mini_batches: 1, ..config(dir.path()) };
            cfg.objective.loss_type = loss_type;
            cfg.max_grad_norm = 0.0;
            let mut t = digits_trainer(cfg);
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
    let mut worst = 0.0f32;
    for ((spec, x), y) in cpu.model().specs().iter().zip(&wa).zip(&wb) {
        // The key bias (middle third of c_attn.bias) has an identically zero gradient (a
        // constant added to every key leaves each softmax unchanged): both backends hand AdamW
        // rounding noise there, which its first step scales to up to ±lr.
        let skip = if spec.name.ends_with("attn.c_attn.bias") { x.len() / 3..2 * x.len() / 3 } else { 0..0 };
        for (i, (p, q)) in x.iter().zip(y).enumerate() {
            if !skip.contains(&i) {
                worst = worst.max((p - q).abs());
            }
        }
    }
    // Four AdamW steps at lr ≤ 1e-3 (μ = 2 passes × 2 minibatches): each moves a weight by
    // ~lr·m̂/√v̂, which for an element whose gradients are ~1e-5 of the tensor's scale turns
    // the backends' f32 rounding (~1e-7 of the scale) into ~1 % of lr. A wrong gradient moves
    // whole tensors by ~lr, so 3e-5 (3 % of lr) separates the two.
    assert!(worst < 3e-5, "weights differ by {worst}");
}

/// A GPT-2 whose next token depends only on the position: every block is zero (the residual
/// stream is wte[token] + wpe[position]), wte rows are one-hot, and wpe[p] points, 100 times
/// stronger, at `script[p]`, so after ln_f (gain 5) the scripted token wins by a logit margin
/// of ~50: sampling at temperature 1 picks it with probability 1 − 1e-20.
fn scripted_policy(script: &[u32]) -> Gpt2<CpuBackend> {
    let tok = Tokenizer::default_char();
    let v = tok.vocab_size();
    let cfg = Gpt2Config {
        n_embd: 128,
        n_layer: 1,
        n_head: 1,
        n_positions: script.len(),
        ..Gpt2Config::named("tiny", v).unwrap()
    }
    .with_eos(tok.eos_id());
    let mut m = Gpt2::random(CpuBackend::new(Some(2)), cfg.clone(), 1).unwrap();
    for spec in m.specs().to_vec() {
        let n: usize = spec.shape.iter().product();
        let mut x = vec![0.0f32; n];
        match spec.name.as_str() {
            "wte.weight" => (0..v).for_each(|j| x[j * 128 + j] = 1.0),
            "wpe.weight" => script.iter().enumerate().for_each(|(p, &t)| x[p * 128 + t as usize] = 100.0),
            "ln_f.weight" => x.iter_mut().for_each(|g| *g = 5.0),
            s if s.ends_with("ln_1.weight") || s.ends_with("ln_2.weight") => x.iter_mut().for_each(|g| *g = 1.0),
            _ => {}
        }
        m.set_param(&spec.name, &x).unwrap();
    }
    m
}

#[test]
fn rollouts_stop_at_the_end_token_and_nothing_after_it_is_scored_logged_or_trained() {
    let tok = Tokenizer::default_char();
    let id = |c: char| tok.encode(&c.to_string()).unwrap()[0];
    // Completion token j of a P-token prompt comes from position P − 1 + j. Positions hold
    // '7' up to 4, EOS (0) at 5 and '9' from 6 on: a 4-character prompt completes "77" + EOS
    // (and would go on with "9" were it not stopped); a 6-character prompt emits only EOS; an
    // 8-character prompt starts past position 5 and runs to the cap: truncated.
    let mut script = vec![id('7'); 32];
    script[5] = 0;
    for s in script.iter_mut().skip(6) {
        *s = id('9');
    }
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let data = TaskDataset::from_tasks(
        ["1+2=", "12+34=", "12+345=="]
            .iter()
            .map(|p| Task { prompt: p.to_string(), task_id: "t".into(), record: serde_json::json!({}) })
            .collect(),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = DapoConfig {
        batch_size: 3,
        group_size: 2,
        shuffle_dataset: false,
        output_dir: dir.path().to_path_buf(),
        ..DapoConfig::default()
    };
    cfg.sampling.max_new_tokens = 5;
    let run = |mask_truncated: bool| {
        seen.lock().unwrap().clear();
        let cfg = DapoConfig { mask_truncated, ..cfg.clone() };
        let mixer = RewardMixer::from_weights([("len", 1.0)]).unwrap();
        let scorer = FnScorer::new("len", scorer_fn(seen.clone()));
        let mut t = DapoTrainer::new(
            scripted_policy(&script),
            tok.clone(),
            Box::new(scorer),
            FeedbackMapping::identity(),
            mixer,
            cfg,
        )
        .unwrap();
        assert_eq!(t.end_tokens(), [0], "the model config's eos_token_id");
        t.step(&data).unwrap()
    };
    let r = run(false);
    // The scorer saw the text before the end token, never what would follow it.
    let texts = seen.lock().unwrap().clone();
    assert_eq!(texts, ["77", "77", "", "", "99999", "99999"], "scorer inputs");
    // Lengths count the end token (as TRL's completion mask does): 3, 1 and the 5-token cap.
    assert_eq!(r.generation["completion_len"], serde_json::json!((3.0 + 3.0 + 1.0 + 1.0 + 5.0 + 5.0) / 6.0));
    assert_eq!(r.generation["truncated"], 2);
    assert_eq!(r.tokens, 18);
    assert_eq!(r.rl.tokens, 18.0, "every completion token up to and including EOS is in the loss, nothing after");
    // Truncated completions leave the loss entirely with mask_truncated.
    let r = run(true);
    assert_eq!(r.rl.tokens, 8.0, "only the two terminated groups' tokens");
}

fn scorer_fn(
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) -> impl FnMut(&ScoreInput<'_>) -> gepa_dapo_grn::Result<Metrics> {
    move |x: &ScoreInput<'_>| {
        log.lock().unwrap().push(x.completion.to_string());
        Ok(Metrics::from([("len".to_string(), x.completion.len() as f64)]))
    }
}

#[test]
fn beta_zero_without_a_target_holds_no_reference_and_a_target_adapts_beta_every_step() {
    let data = tasks(20);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.objective.beta = 0.0;
    let mut t = digits_trainer(cfg.clone());
    assert!(!t.has_reference());
    let r = t.step(&data).unwrap();
    assert_eq!(r.timing["reference_s"], 0.0, "no reference pass");
    t.save_reference().unwrap();
    assert!(!dir.path().join("reference").exists(), "nothing to save");

    // An adaptive target: β moves by (1 + clip(kl/target − 1, ±0.2)·S/horizon) after each step,
    // with S = the step's 12 sequences (verl's rule), from the KL that step measured.
    cfg.objective.beta = 0.1;
    cfg.kl_target = Some(1e-3);
    cfg.kl_horizon = 120.0;
    let mut t = digits_trainer(cfg);
    assert!(t.has_reference());
    let mut beta = t.kl_coef();
    for _ in 0..3 {
        let r = t.step(&data).unwrap();
        let err = (f64::from(r.rl.kl) / 1e-3 - 1.0).clamp(-0.2, 0.2);
        let want = beta * (1.0 + err * 12.0 / 120.0);
        assert!((t.kl_coef() - want).abs() < 1e-12, "β {} vs {want} (kl {})", t.kl_coef(), r.rl.kl);
        beta = t.kl_coef();
    }
    assert!(beta != 0.1, "β moved");
}

#[test]
fn group_size_one_and_a_constant_rate_with_a_floor_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = DapoConfig { group_size: 1, ..config(dir.path()) };
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("group_size") && e.contains("at least 2"), "{e}");
    let c = DapoConfig { lr_scheduler_type: LrDecay::Constant, min_learning_rate: 1e-4, ..config(dir.path()) };
    assert!(c.validate().unwrap_err().to_string().contains("min_learning_rate"));
}

#[test]
fn every_task_is_checked_at_load_and_long_prompts_are_dropped_with_a_count() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tasks.jsonl");
    let mut lines: Vec<String> =
        (0..5).map(|i| format!("{{\"prompt\": \"{i}+1=\", \"answer\": \"{}\"}}", i + 1)).collect();
    lines.push(format!("{{\"prompt\": \"{}\", \"answer\": \"1\"}}", "9".repeat(200)));
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let data = TaskDataset::load(&path, false).unwrap();
    let t = trainer(dir.path());
    let pool = t.prepare(&data).unwrap();
    assert_eq!((pool.ids.len(), pool.dropped), (5, 1), "the 200-token prompt leaves no room below n_positions 128");
    // A line the scorer cannot use is named by file:line before any step.
    lines.insert(3, "{\"prompt\": \"3+3=\"}".into());
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let data = TaskDataset::load(&path, false).unwrap();
    let e = t.prepare(&data).unwrap_err().to_string();
    assert!(e.contains("tasks.jsonl:4") && e.contains("answer"), "{e}");
}

#[test]
fn prompts_are_visited_in_shuffled_epochs_without_replacement() {
    let data = tasks(6);
    let dir = tempfile::tempdir().unwrap();
    let cfg = DapoConfig { curriculum: None, batch_size: 3, num_iterations: 1, mini_batches: 1, ..config(dir.path()) };
    let mut t = digits_trainer(cfg);
    let mut seen = Vec::new();
    for _ in 0..4 {
        let r = t.step(&data).unwrap();
        seen.extend(r.gepa.iter().step_by(4).map(|g| g.prompt_id));
    }
    for epoch in seen.chunks(6) {
        let mut e = epoch.to_vec();
        e.sort();
        assert_eq!(e, (0..6).collect::<Vec<u64>>(), "each epoch visits every prompt once: {seen:?}");
    }
    assert_ne!(&seen[..6], &seen[6..], "each epoch has its own order");
}

#[test]
fn each_step_logs_trl_metrics_and_logging_steps_average_them() {
    // Four steps, logging every 2 (TRL's logging_steps) with log_completions: the JSONL keeps
    // every step with its metrics under TRL's names, the windows close at steps 2 and 4 with
    // the mean of their steps, and completions.jsonl holds the logging steps' completions.
    let data = tasks(20);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.logging_steps = 2;
    cfg.log_completions = true;
    let mut t = trainer_for(cfg, digit_share(), RewardMixer::from_weights([("digits", 1.0)]).unwrap()).unwrap();
    let mut recs = Vec::new();
    t.train(&data, None, None, &mut |r| recs.push(r.clone()), &mut |_, _| {}).unwrap();
    assert_eq!(recs.len(), 4);
    for r in &recs {
        let m = &r.metrics;
        let digits: Vec<f64> = r.gepa.iter().map(|g| g.rewards["digits"]).collect();
        let mean = digits.iter().sum::<f64>() / digits.len() as f64;
        assert!((m["reward"] - r.reward_mean).abs() < 1e-12 && (m["rewards/digits/mean"] - mean).abs() < 1e-12);
        let var = digits.iter().map(|d| (d - mean) * (d - mean)).sum::<f64>() / (digits.len() - 1) as f64;
        assert!((m["rewards/digits/std"] - var.sqrt()).abs() < 1e-12, "unbiased std, as torch");
        assert_eq!(m["completions/max_length"], r.generation["completion_len_max"].as_f64().unwrap());
        assert_eq!(m["clip_ratio/low_mean"], f64::from(r.rl.clip_frac_low));
        assert_eq!(m["learning_rate"], f64::from(r.rl.lr));
        assert!((0.0..=1.0).contains(&m["frac_reward_zero_std"]));
        assert_eq!(r.samples.len(), r.gepa.len());
        assert!(r.time > 1.7e9, "a Unix timestamp");
    }
    assert!(recs[1].metrics["num_tokens"] > recs[0].metrics["num_tokens"], "a running total");
    assert_eq!(recs.iter().map(|r| r.logged.is_some()).collect::<Vec<_>>(), [false, true, false, true]);
    let w = recs[1].logged.as_ref().unwrap();
    assert!((w["reward"] - (recs[0].metrics["reward"] + recs[1].metrics["reward"]) / 2.0).abs() < 1e-12);
    assert_eq!(w["num_tokens"], recs[1].metrics["num_tokens"]);

    let log = std::fs::read_to_string(dir.path().join("dapo_log.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[3]["metrics"]["reward"].as_f64().unwrap(), recs[3].metrics["reward"]);
    let comps = std::fs::read_to_string(dir.path().join("completions.jsonl")).unwrap();
    let comps: Vec<serde_json::Value> = comps.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(comps.iter().map(|c| c["step"].as_u64().unwrap()).collect::<Vec<_>>(), [2, 4]);
    let first = &comps[0]["completions"][0];
    for key in ["prompt", "completion", "rewards", "reward", "advantage"] {
        assert!(first.get(key).is_some(), "{key} missing: {first}");
    }
    assert_eq!(comps[0]["completions"].as_array().unwrap().len(), 12);
}

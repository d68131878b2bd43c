//! `dapo train`: DAPO / GRPO on a task file, or, with no arguments, the built-in default: a
//! generated two-digit addition task, a tiny GPT-2 warm-started with a short SFT run, then RL,
//! with held-out accuracy printed before and after.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::device::on_backend;
use super::device::ComputeArgs;
use super::model_arg::{check_model_dir, load_checkpoint};
use crate::backend::Backend;
use crate::backend::LossType;
use crate::data::{arithmetic, SftDataset, TaskDataset};
use crate::error::{Error, Result};
use crate::model::{Gpt2, Gpt2Config};
use crate::reward::{ExternalScorer, FeedbackMapping, JudgeScorer, MathScorer, RewardMixer, Scorer};
use crate::rl::safety::SafetyConfig;
use crate::tokenizer::Tokenizer;
use crate::train::dapo::{DapoTrainer, EvalReport, StepRecord, LOG_FILE};
use crate::train::dapo_config::DapoConfig;
use crate::train::sft::{train_sft, SftConfig};

/// Arguments of `dapo train`. Every flag overrides the same setting of `--config`.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Policy checkpoint: a local transformers GPT-2 directory (config.json, model.safetensors,
    /// tokenizer.json). Default: a tiny GPT-2 warm-started on the built-in task.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Task file: JSONL, one {"prompt", "answer", "task_id"} a line. Default: the built-in
    /// two-digit addition task.
    #[arg(long)]
    dataset: Option<PathBuf>,
    /// Held-out task file for evaluation (greedy decoding).
    #[arg(long)]
    eval_dataset: Option<PathBuf>,
    /// Directory for checkpoints (checkpoint-N/), dapo_log.jsonl and the reference model.
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// Settings file (TOML, YAML or JSON with the fields of the trainer's config); flags win.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Continue from this checkpoint directory (written by an earlier run), exactly.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// RL steps.
    #[arg(long)]
    steps: Option<u64>,
    /// Prompts per step.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Completions per prompt (G).
    #[arg(long)]
    group_size: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    learning_rate: Option<f32>,
    /// Clip range ε for both sides of the ratio (PPO/GRPO); see --clip-ratio-low/-high.
    #[arg(long)]
    clip_ratio: Option<f32>,
    /// Lower clip ε_low (the ratio is clipped at 1 − ε_low); DAPO: 0.2.
    #[arg(long)]
    clip_ratio_low: Option<f32>,
    /// Upper clip ε_high (the ratio is clipped at 1 + ε_high); DAPO: 0.28.
    #[arg(long)]
    clip_ratio_high: Option<f32>,
    /// Initial KL coefficient β (k3 KL to the frozen reference; 0 turns the reference off).
    #[arg(long)]
    kl_coef: Option<f32>,
    /// Adapt β toward this per-token KL.
    #[arg(long)]
    kl_target: Option<f64>,
    /// Loss aggregation: dapo, bnpo, grpo or dr_grpo.
    #[arg(long)]
    loss_type: Option<LossType>,
    /// Passes over each step's rollouts (μ).
    #[arg(long)]
    num_iterations: Option<usize>,
    /// Sequences per forward/backward pass; gradients accumulate over a minibatch (0: all).
    #[arg(long)]
    micro_batch_size: Option<usize>,
    /// Most tokens generated per completion.
    #[arg(long)]
    max_new_tokens: Option<usize>,
    /// Sampling temperature (also used by the loss).
    #[arg(long)]
    temperature: Option<f32>,
    /// Sample from the k most likely tokens only (0: off).
    #[arg(long)]
    top_k: Option<usize>,
    /// Nucleus sampling: the smallest set of tokens with this much probability (1: off).
    #[arg(long)]
    top_p: Option<f32>,
    /// Reward mixer weights (YAML, JSON or TOML). Default: correctness 1.0,
    /// reasoning_quality 0.5, format_penalty −0.25 (configs/reward_mixer.yaml).
    #[arg(long)]
    reward_mixer: Option<PathBuf>,
    /// An external scorer: a command that reads JSONL requests on stdin and prints one JSON
    /// reward dict per completion (docs/external_scorer.md). Default: the built-in math scorer.
    #[arg(long, conflicts_with = "judge_model")]
    scorer_cmd: Option<String>,
    /// Seconds an external scorer may take per batch before it is killed and the run stops.
    #[arg(long, default_value_t = 60.0)]
    scorer_timeout: f64,
    /// A judge model scores the completions instead: a local GPT2ForSequenceClassification
    /// directory (config.json, model.safetensors with `score.weight`, tokenizer.json); its
    /// metric is named `judge`, so give the mixer a `judge` weight.
    #[arg(long)]
    judge_model: Option<PathBuf>,
    /// Safety rules (YAML, TOML or JSON): skip the update, scale the learning rate or raise β
    /// when a metric (reward_mean, kl, rewards.<key>, tags.<key>) crosses a threshold.
    #[arg(long)]
    safety: Option<PathBuf>,
    /// Evaluate on the held-out split every N steps.
    #[arg(long)]
    eval_every: Option<u64>,
    /// Write a checkpoint every N steps (one is always written at the end).
    #[arg(long)]
    save_every: Option<u64>,
    /// Skip malformed dataset lines (with a warning) instead of stopping at the first.
    #[arg(long)]
    skip_bad_lines: bool,
    /// SFT warm-start steps of the built-in default.
    #[arg(long, default_value_t = 900)]
    warmup_sft_steps: u64,
    /// Seed of initialisation, prompt sampling and rollouts.
    #[arg(long)]
    seed: Option<u64>,
    #[command(flatten)]
    compute: ComputeArgs,
}

/// The built-in default's settings: what makes RL visibly help on the addition task within
/// a couple of minutes on two cores.
fn builtin_defaults() -> DapoConfig {
    let mut c = DapoConfig {
        steps: 1500,
        batch_size: 32,
        group_size: 8,
        learning_rate: 3e-4,
        min_learning_rate: 3e-4,
        eval_every: 250,
        eval_size: 300,
        output_dir: PathBuf::from("runs/dapo"),
        ..DapoConfig::default()
    };
    c.sampling.max_new_tokens = 5;
    c.sampling.temperature = 1.0;
    c
}

/// The settings: defaults (or the built-in default's), then `--config`, then the flags.
fn settings(a: &TrainArgs, builtin: bool) -> Result<DapoConfig> {
    let mut c = match &a.config {
        Some(p) => DapoConfig::from_file(p)?,
        None if builtin => builtin_defaults(),
        None => DapoConfig::default(),
    };
    macro_rules! set {
        ($flag:expr => $($field:tt)+) => {
            if let Some(v) = $flag.clone() {
                c.$($field)+ = v;
            }
        };
    }
    set!(a.output_dir => output_dir);
    set!(a.steps => steps);
    set!(a.batch_size => batch_size);
    set!(a.group_size => group_size);
    set!(a.learning_rate => learning_rate);
    if let Some(lr) = a.learning_rate {
        c.min_learning_rate = lr;
    }
    if let Some(e) = a.clip_ratio {
        c.objective.eps_low = e;
        c.objective.eps_high = e;
    }
    set!(a.clip_ratio_low => objective.eps_low);
    set!(a.clip_ratio_high => objective.eps_high);
    set!(a.kl_coef => objective.beta);
    if a.kl_target.is_some() {
        c.kl_target = a.kl_target;
    }
    set!(a.loss_type => objective.loss_type);
    set!(a.num_iterations => num_iterations);
    set!(a.micro_batch_size => micro_batch_size);
    set!(a.max_new_tokens => sampling.max_new_tokens);
    set!(a.temperature => sampling.temperature);
    set!(a.top_k => sampling.top_k);
    set!(a.top_p => sampling.top_p);
    set!(a.eval_every => eval_every);
    set!(a.save_every => save_every);
    set!(a.seed => seed);
    if let Some(p) = &a.safety {
        c.safety = Some(SafetyConfig::from_path(p)?);
    }
    c.validate()?;
    Ok(c)
}

/// The mixer: `--reward-mixer`, or the seed's weights.
fn mixer(path: Option<&Path>) -> Result<RewardMixer> {
    match path {
        Some(p) => RewardMixer::from_file(p),
        None => {
            RewardMixer::from_weights([("correctness", 1.0), ("reasoning_quality", 0.5), ("format_penalty", -0.25)])
        }
    }
}

/// The scorer: an external command, a judge model, or the built-in math scorer.
fn scorer(a: &TrainArgs) -> Result<Box<dyn Scorer>> {
    if let Some(c) = &a.scorer_cmd {
        if !(a.scorer_timeout.is_finite() && a.scorer_timeout > 0.0) {
            return Err(Error::Invalid(format!("--scorer-timeout must be > 0 seconds, got {}", a.scorer_timeout)));
        }
        let timeout = std::time::Duration::from_secs_f64(a.scorer_timeout);
        return Ok(Box::new(ExternalScorer::from_command_line(c)?.with_timeout(timeout)));
    }
    if let Some(dir) = &a.judge_model {
        check_model_dir(dir)?;
        return Ok(Box::new(JudgeScorer::load(dir)?));
    }
    Ok(Box::new(MathScorer))
}

/// Ctrl-C sets the flag; the loop finishes its step, checkpoints and returns.
fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    // A second handler cannot be installed (tests call `run` once per process); then Ctrl-C
    // keeps its default meaning.
    let _ = ctrlc::set_handler(move || {
        if f.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: finishing this step and writing a checkpoint (Ctrl-C again to quit now)");
    });
    flag
}

/// The built-in default's policy: a tiny GPT-2 warm-started on the addition task by SFT.
fn warm_start<K: Backend>(k: K, tok: &Tokenizer, train: &Path, out: &Path, steps: u64, seed: u64) -> Result<Gpt2<K>> {
    let cfg = Gpt2Config::named("tiny", tok.vocab_size())?;
    let mut model = Gpt2::random(k, cfg, seed)?;
    let data = SftDataset::load(train, tok)?;
    let sft = SftConfig {
        batch_size: 16,
        seq_len: 16,
        steps,
        lr: 3e-3,
        min_lr: 3e-4,
        warmup: 20,
        seed,
        output_dir: out.join("sft"),
        ..SftConfig::default()
    };
    let t = std::time::Instant::now();
    let report = train_sft(&mut model, tok, &data, &sft, |_| {})?;
    eprintln!(
        "warm start: {steps} SFT steps in {:.1}s, final loss {:.3}",
        t.elapsed().as_secs_f64(),
        report.final_loss
    );
    Ok(model)
}

fn print_eval(label: &str, r: &EvalReport) {
    let acc = r.accuracy.map(|a| format!("{:.1}%", 100.0 * a)).unwrap_or_else(|| "n/a".into());
    let metrics: Vec<String> = r.metrics.iter().map(|(k, v)| format!("{k} {v:.3}")).collect();
    eprintln!("{label}: held-out accuracy {acc} on {} prompts ({})", r.n, metrics.join(", "));
}

/// Runs `dapo train`.
pub fn run(a: TrainArgs) -> Result<()> {
    let builtin = a.model.is_none() && a.dataset.is_none();
    let cfg = settings(&a, builtin)?;
    let resolved = a.compute.resolve()?;
    on_backend!(resolved, k => train_on(k, &a, cfg))
}

/// The rest of `dapo train`, on the backend `--device` resolved to.
fn train_on<K: Backend>(k: K, a: &TrainArgs, cfg: DapoConfig) -> Result<()> {
    std::fs::create_dir_all(&cfg.output_dir).map_err(|e| Error::io(&cfg.output_dir, e))?;

    let (train_path, eval_path) = match (&a.dataset, &a.eval_dataset) {
        (Some(d), e) => (d.clone(), e.clone()),
        (None, e) => {
            let dir = cfg.output_dir.join("data");
            let (train, heldout) = arithmetic::write_addition_task(&dir, cfg.seed)?;
            eprintln!("data: built-in two-digit addition task, written to {}", dir.display());
            (train, e.clone().or(Some(heldout)))
        }
    };
    let mut data = TaskDataset::load(&train_path, a.skip_bad_lines)?;
    for s in &data.skipped {
        eprintln!("warning: skipped {s}");
    }
    let mut eval = eval_path.as_ref().map(|p| TaskDataset::load(p, a.skip_bad_lines)).transpose()?;
    if eval.is_none() && cfg.eval_every > 0 {
        // No held-out file: evaluate on a tenth of the tasks (at most eval_size), kept out of
        // training, chosen with the seed.
        let n = (data.len() / 10).min(cfg.eval_size).max(1);
        let (train, held) = data.split_heldout(n, cfg.seed ^ 0x5eed);
        eprintln!(
            "eval: holding out {} of {} tasks of {} (no --eval-dataset)",
            held.len(),
            data.len(),
            train_path.display()
        );
        (data, eval) = (train, (!held.is_empty()).then_some(held));
    }

    let (model, tok) = match &a.model {
        Some(dir) => {
            check_model_dir(dir)?;
            load_checkpoint(dir, k)?
        }
        None => {
            let tok = Tokenizer::default_char();
            let m = warm_start(k, &tok, &train_path, &cfg.output_dir, a.warmup_sft_steps, cfg.seed)?;
            (m, tok)
        }
    };
    let mut trainer = DapoTrainer::new(
        model,
        tok,
        scorer(a)?,
        FeedbackMapping::identity(),
        mixer(a.reward_mixer.as_deref())?,
        cfg.clone(),
    )?;
    if let Some(dir) = &a.resume {
        trainer.resume(dir)?;
        eprintln!("resumed from {} at step {}", dir.display(), trainer.steps_done());
    }

    let stop = interrupt_flag();
    let bar = indicatif::ProgressBar::new(cfg.steps);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] step {pos}/{len} {msg}")
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    bar.set_position(trainer.steps_done());
    let start = std::time::Instant::now();
    let mut tokens = 0usize;
    let mut on_step = |r: &StepRecord| {
        tokens += r.tokens;
        let acc = r.accuracy.map(|a| format!("acc {:.0}%  ", 100.0 * a)).unwrap_or_default();
        for e in &r.safety {
            bar.println(format!("step {}: {e}", r.step));
        }
        bar.set_position(r.step);
        bar.set_message(format!(
            "reward {:.3}  {acc}KL {:.4}  {:.0} tok/s",
            r.reward_mean,
            r.rl.kl,
            tokens as f64 / start.elapsed().as_secs_f64().max(1e-9)
        ));
    };
    let mut on_eval = |step: u64, r: &EvalReport| {
        let acc = r.accuracy.map(|a| format!("{:.1}%", 100.0 * a)).unwrap_or_else(|| "n/a".into());
        bar.println(format!("step {step}: held-out accuracy {acc}"));
    };
    let report = trainer.train(&data, eval.as_ref(), Some(&stop), &mut on_step, &mut on_eval)?;
    bar.finish();
    if let (Some((_, first)), Some((_, last))) = (report.evals.first(), report.evals.last()) {
        print_eval("before RL", first);
        print_eval("after RL", last);
    }
    eprintln!(
        "{} steps in {:.1}s; log: {}; checkpoint: {}",
        trainer.steps_done(),
        start.elapsed().as_secs_f64(),
        cfg.output_dir.join(LOG_FILE).display(),
        report.checkpoints.last().map(|p| p.display().to_string()).unwrap_or_else(|| "none".into())
    );
    if report.interrupted {
        return Err(Error::Interrupted(format!(
            "interrupted at step {}; resume with --resume {}",
            trainer.steps_done(),
            report.checkpoints.last().map(|p| p.display().to_string()).unwrap_or_default()
        )));
    }
    Ok(())
}

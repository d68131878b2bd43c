//! `dapo train`: DAPO / GRPO on a task file, or, with no arguments, the built-in default: a
//! generated two-digit addition task, a tiny GPT-2 warm-started with a short SFT run, then RL,
//! with held-out accuracy printed before and after.
//!
//! Settings come in layers ([`crate::train::settings`]): the defaults (the built-in default's
//! own, or, with `--resume`, the run's saved settings), then `--config`, then the flags. Each
//! flag sets one setting; TRL's names work as aliases. The effective settings are printed at
//! the start and written to the output directory; on resume every changed setting is named.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::device::on_backend;
use super::device::ComputeArgs;
use super::model_arg::{check_model_dir, load_checkpoint};
use super::progress::{Progress, StepLine};
use super::signals::Interrupt;
use crate::backend::Backend;
use crate::backend::{IsLevel, KlEstimator, LossType};
use crate::checkpoint::run_dir::{clear_previous_run, latest_checkpoint, previous_run};
use crate::checkpoint::{recover_dirs, DirLock, EndTokens};
use crate::data::{arithmetic, SftDataset, TaskDataset};
use crate::error::{Error, Result};
use crate::model::{Gpt2, Gpt2Config};
use crate::optim::LrDecay;
use crate::reward::{ExternalScorer, FeedbackMapping, JudgeScorer, MathScorer, MultiScorer, RewardMixer, Scorer};
use crate::rl::safety::SafetyConfig;
use crate::tokenizer::Tokenizer;
use crate::train::dapo::{read_state, DapoTrainer, EvalReport, StepRecord, LOG_FILE};
use crate::train::dapo_config::DapoConfig;
use crate::train::settings::{changes, leaves, merge, read_settings, set_path, RunSources, TrainSettings};
use crate::train::sft::{train_sft, SftConfig};

/// The effective settings of a run, written to its output directory.
pub const SETTINGS_FILE: &str = "run_settings.json";

/// Arguments of `dapo train`. Every flag overrides one setting of `--config` (or, with
/// `--resume`, of the resumed run); TRL's `GRPOConfig` names are accepted as aliases.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Policy checkpoint: a local transformers GPT-2 directory (config.json, model.safetensors,
    /// tokenizer.json). Default: a tiny GPT-2 warm-started on the built-in task.
    #[arg(long, visible_alias = "model-name-or-path", help_heading = "Run")]
    model: Option<PathBuf>,
    /// The tokenizer, when not the checkpoint's own: a tokenizer.json, or a directory with one
    /// (or with GPT-2's vocab.json + merges.txt).
    #[arg(long, help_heading = "Run")]
    tokenizer: Option<PathBuf>,
    /// Task file: JSONL, one {"prompt", "answer", "task_id"} a line. Default: the built-in
    /// two-digit addition task.
    #[arg(long, help_heading = "Run")]
    dataset: Option<PathBuf>,
    /// Held-out task file for evaluation (greedy decoding).
    #[arg(long, help_heading = "Run")]
    eval_dataset: Option<PathBuf>,
    /// Directory for checkpoints (checkpoint-N/), dapo_log.jsonl, run_settings.json and the
    /// reference model.
    #[arg(long, help_heading = "Run")]
    output_dir: Option<PathBuf>,
    /// Settings file (TOML, YAML or JSON): the trainer's settings by this crate's names or by
    /// TRL's GRPOConfig names; flags win.
    #[arg(long, help_heading = "Run")]
    config: Option<PathBuf>,
    /// Continue from this checkpoint directory exactly: its saved settings and data paths are
    /// restored, and flags given here override them (each override is printed). `auto`: the
    /// latest complete checkpoint in the output directory, or a fresh start when it has none.
    #[arg(long, value_name = "CHECKPOINT|auto", help_heading = "Run")]
    resume: Option<PathBuf>,
    /// Start a fresh run in an output directory that holds a previous run, deleting that run's
    /// checkpoints, logs and final model first (without it such a start is refused).
    #[arg(long, help_heading = "Run")]
    overwrite_output_dir: bool,
    /// Set any setting by its dotted name, e.g. `--set curriculum.alpha=0.2`; the value is read
    /// as JSON when it parses, else as a string. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE", help_heading = "Run")]
    set: Vec<String>,
    /// Seed of initialisation, prompt order, rollouts and minibatch shuffling.
    #[arg(long, help_heading = "Run")]
    seed: Option<u64>,
    /// SFT warm-start steps of the built-in default.
    #[arg(long, help_heading = "Run")]
    warmup_sft_steps: Option<u64>,
    /// Skip malformed dataset lines (with a warning) instead of stopping at the first.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL", help_heading = "Run")]
    skip_bad_lines: Option<bool>,

    /// Reward mixer weights (YAML, JSON or TOML). Default: correctness 1.0,
    /// reasoning_quality 0.5, format_penalty −0.25 (configs/reward_mixer.yaml).
    #[arg(long, help_heading = "Rewards")]
    reward_mixer: Option<PathBuf>,
    /// The built-in math scorer (correctness, reasoning_quality, format_penalty, brevity).
    /// Default: on when no other reward source is given.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL", help_heading = "Rewards")]
    math_scorer: Option<bool>,
    /// An external scorer: a command that reads JSONL requests on stdin and prints one JSON
    /// reward dict per completion (docs/external_scorer.md). Split into words by shell quoting
    /// rules (`--scorer-cmd 'python3 "my scorer.py"'`); no shell runs it. Repeatable; each is a
    /// reward source beside the others.
    #[arg(long, help_heading = "Rewards")]
    scorer_cmd: Vec<String>,
    /// Seconds an external scorer may take per batch before it is killed and the run stops.
    #[arg(long, help_heading = "Rewards")]
    scorer_timeout: Option<f64>,
    /// A judge model: a local GPT2ForSequenceClassification directory (config.json,
    /// model.safetensors with `score.weight`, tokenizer.json); its metric is named `judge`
    /// (or its labels). Repeatable; each is a reward source beside the others.
    #[arg(long, help_heading = "Rewards")]
    judge_model: Vec<PathBuf>,
    /// Safety rules (YAML, TOML or JSON): skip the update, scale the learning rate or raise β
    /// when a metric (reward_mean, kl, loss, grad_norm, rewards.<key>, tags.<key>) crosses a
    /// threshold; a rule on a metric no step produces is an error at the start.
    #[arg(long, help_heading = "Rewards")]
    safety: Option<PathBuf>,

    /// RL steps.
    #[arg(long, visible_alias = "max-steps", help_heading = "Batches")]
    steps: Option<u64>,
    /// Prompts per step.
    #[arg(long, help_heading = "Batches")]
    batch_size: Option<usize>,
    /// Completions per prompt (G, at least 2).
    #[arg(long, visible_alias = "num-generations", help_heading = "Batches")]
    group_size: Option<usize>,
    /// Passes over each step's rollouts (μ).
    #[arg(long, help_heading = "Batches")]
    num_iterations: Option<usize>,
    /// Optimizer steps per pass (the step's sequences are shuffled and split).
    #[arg(long, help_heading = "Batches")]
    mini_batches: Option<usize>,
    /// Sequences per forward/backward pass; gradients accumulate over a minibatch (0: all).
    #[arg(long, visible_alias = "per-device-train-batch-size", help_heading = "Batches")]
    micro_batch_size: Option<usize>,

    /// Peak learning rate.
    #[arg(long, help_heading = "Optimizer")]
    learning_rate: Option<f32>,
    /// Decay after warmup: constant, linear or cosine.
    #[arg(long, help_heading = "Optimizer")]
    lr_scheduler_type: Option<LrDecay>,
    /// Where linear or cosine decay ends.
    #[arg(long, help_heading = "Optimizer")]
    min_learning_rate: Option<f32>,
    /// Linear warmup steps.
    #[arg(long, help_heading = "Optimizer")]
    warmup_steps: Option<u64>,
    /// AdamW weight decay (matrices and embeddings only).
    #[arg(long, help_heading = "Optimizer")]
    weight_decay: Option<f32>,
    /// AdamW β1.
    #[arg(long, help_heading = "Optimizer")]
    adam_beta1: Option<f32>,
    /// AdamW β2.
    #[arg(long, help_heading = "Optimizer")]
    adam_beta2: Option<f32>,
    /// AdamW epsilon.
    #[arg(long, help_heading = "Optimizer")]
    adam_epsilon: Option<f32>,
    /// Global gradient-norm clipping (0 disables it).
    #[arg(long, help_heading = "Optimizer")]
    max_grad_norm: Option<f32>,

    /// Loss: dapo, bnpo, grpo, dr_grpo, cispo, sapo, luspo or vespo.
    #[arg(long, help_heading = "Loss")]
    loss_type: Option<LossType>,
    /// Importance ratio per token, or per sequence (GSPO).
    #[arg(long, help_heading = "Loss")]
    importance_sampling_level: Option<IsLevel>,
    /// Clip range ε for both sides of the ratio (PPO/GRPO; TRL's `epsilon`).
    #[arg(long, visible_alias = "epsilon", help_heading = "Loss")]
    clip_ratio: Option<f32>,
    /// Lower clip ε_low (the ratio is clipped at 1 − ε_low); DAPO: 0.2.
    #[arg(long, help_heading = "Loss")]
    clip_ratio_low: Option<f32>,
    /// Upper clip ε_high (the ratio is clipped at 1 + ε_high); DAPO: 0.28; cispo: the cap.
    #[arg(long, visible_alias = "epsilon-high", help_heading = "Loss")]
    clip_ratio_high: Option<f32>,
    /// Two-sided clipping: the unclipped ratio is capped at δ (INTELLECT-2; TRL's `delta`).
    #[arg(long, help_heading = "Loss")]
    delta: Option<f32>,
    /// Dual clip for negative advantages: the loss is bounded by −A·c (verl's `clip_ratio_c`).
    #[arg(long, help_heading = "Loss")]
    clip_ratio_c: Option<f32>,
    /// KL coefficient β to the frozen reference (0: no reference model at all); with
    /// --kl-target, the initial β.
    #[arg(long, visible_alias = "beta", help_heading = "Loss")]
    kl_coef: Option<f32>,
    /// KL estimator: k1, k2 or k3.
    #[arg(long, help_heading = "Loss")]
    kl_estimator: Option<KlEstimator>,
    /// Multiply the KL term by the importance ratio (TRL's `use_bias_correction_kl`).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL", help_heading = "Loss")]
    use_bias_correction_kl: Option<bool>,
    /// Adapt β toward this per-token KL (verl's adaptive controller).
    #[arg(long, help_heading = "Loss")]
    kl_target: Option<f64>,
    /// Horizon of the adaptive KL controller, in sequences.
    #[arg(long, help_heading = "Loss")]
    kl_horizon: Option<f64>,
    /// Entropy bonus coefficient (mean token entropy, as TRL).
    #[arg(long, help_heading = "Loss")]
    entropy_coef: Option<f32>,
    /// Train only on the top quantile of tokens by entropy (TRL's `top_entropy_quantile`; 1: all).
    #[arg(long, help_heading = "Loss")]
    top_entropy_quantile: Option<f32>,
    /// SAPO gate temperature for positive advantages.
    #[arg(long, help_heading = "Loss")]
    sapo_temperature_pos: Option<f32>,
    /// SAPO gate temperature for other advantages.
    #[arg(long, help_heading = "Loss")]
    sapo_temperature_neg: Option<f32>,
    /// VESPO k for non-negative advantages.
    #[arg(long, help_heading = "Loss")]
    vespo_k_pos: Option<f32>,
    /// VESPO λ for non-negative advantages.
    #[arg(long, help_heading = "Loss")]
    vespo_lambda_pos: Option<f32>,
    /// VESPO k for negative advantages.
    #[arg(long, help_heading = "Loss")]
    vespo_k_neg: Option<f32>,
    /// VESPO λ for negative advantages.
    #[arg(long, help_heading = "Loss")]
    vespo_lambda_neg: Option<f32>,
    /// Rows of logits the fused loss computes at a time (memory, not results).
    #[arg(long, help_heading = "Loss")]
    chunk_rows: Option<usize>,

    /// Advantage scaling: group, batch or none (also true = group, false = none).
    #[arg(long, help_heading = "Advantages")]
    scale_rewards: Option<String>,
    /// Added to the standard deviation before dividing.
    #[arg(long, help_heading = "Advantages")]
    advantage_eps: Option<f64>,
    /// Clip advantages to [−c, c].
    #[arg(long, help_heading = "Advantages")]
    advantage_clip: Option<f64>,

    /// Most tokens generated per completion (also dr_grpo's length and the overlong cap).
    #[arg(long, visible_alias = "max-completion-length", help_heading = "Sampling")]
    max_new_tokens: Option<usize>,
    /// Sampling temperature (also used by the loss).
    #[arg(long, help_heading = "Sampling")]
    temperature: Option<f32>,
    /// Sample from the k most likely tokens only (0: off).
    #[arg(long, help_heading = "Sampling")]
    top_k: Option<usize>,
    /// Nucleus sampling: the smallest set of tokens with this much probability (1: off).
    #[arg(long, help_heading = "Sampling")]
    top_p: Option<f32>,
    /// Extra token ids that end a completion, beside the model's EOS (comma-separated).
    #[arg(long, value_delimiter = ',', help_heading = "Sampling")]
    stop_token_ids: Option<Vec<u32>>,
    /// Strings that end a completion once its text contains them. Repeatable.
    #[arg(long, help_heading = "Sampling")]
    stop_strings: Option<Vec<String>>,

    /// Drop groups whose rewards are all equal and sample more prompts (DAPO).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL", help_heading = "DAPO")]
    dynamic_sampling: Option<bool>,
    /// Generation rounds per step when dynamic sampling refills the batch.
    #[arg(long, help_heading = "DAPO")]
    max_sampling_rounds: Option<usize>,
    /// Soft overlong punishment over the last N tokens before --max-new-tokens.
    #[arg(long, help_heading = "DAPO")]
    overlong_buffer_len: Option<usize>,
    /// The overlong penalty at the full length.
    #[arg(long, help_heading = "DAPO")]
    overlong_penalty_factor: Option<f64>,
    /// Leave completions cut off without an end token out of the loss.
    #[arg(
        long,
        visible_alias = "mask-truncated",
        num_args = 0..=1,
        default_missing_value = "true",
        value_name = "BOOL",
        help_heading = "DAPO"
    )]
    mask_truncated_completions: Option<bool>,
    /// Keep only the last N tokens of longer prompts (else prompts that do not fit are dropped).
    #[arg(long, help_heading = "DAPO")]
    max_prompt_length: Option<usize>,
    /// Visit prompts in seeded shuffled epochs (false: file order).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL", help_heading = "DAPO")]
    shuffle_dataset: Option<bool>,
    /// Put a causal GRN (Global Response Normalization, zero at init) in front of the policy
    /// head and train it: `grn.enabled`. A model that has one keeps it.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL", help_heading = "DAPO")]
    grn: Option<bool>,
    /// Sample prompts by a curriculum over task_id (reward EMAs) instead of in epochs.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL", help_heading = "DAPO")]
    curriculum: Option<bool>,
    /// Curriculum EMA step.
    #[arg(long, help_heading = "DAPO")]
    curriculum_alpha: Option<f64>,
    /// Curriculum weight floor.
    #[arg(long, help_heading = "DAPO")]
    curriculum_floor: Option<f64>,
    /// Curriculum success assumed for a task never seen, in [0, 1].
    #[arg(long, help_heading = "DAPO")]
    curriculum_prior: Option<f64>,
    /// The reward the curriculum reads as "hopeless".
    #[arg(long, help_heading = "DAPO")]
    curriculum_reward_min: Option<f64>,
    /// The reward the curriculum reads as "solved".
    #[arg(long, help_heading = "DAPO")]
    curriculum_reward_max: Option<f64>,

    /// Evaluate on the held-out split every N steps.
    #[arg(long, visible_alias = "eval-steps", help_heading = "Evaluation and checkpoints")]
    eval_every: Option<u64>,
    /// Held-out prompts per evaluation.
    #[arg(long, help_heading = "Evaluation and checkpoints")]
    eval_size: Option<usize>,
    /// Write a checkpoint every N steps (one is always written at the end).
    #[arg(long, visible_alias = "save-steps", help_heading = "Evaluation and checkpoints")]
    save_every: Option<u64>,
    /// Keep at most N checkpoints, deleting the oldest.
    #[arg(long, help_heading = "Evaluation and checkpoints")]
    save_total_limit: Option<usize>,

    /// Where metrics go: a comma-separated list of jsonl (dapo_log.jsonl), tensorboard
    /// (OUTPUT_DIR/runs/), csv (OUTPUT_DIR/metrics.csv), all, or none. Default: jsonl.
    #[arg(long, value_name = "LIST", help_heading = "Logging")]
    report_to: Option<String>,
    /// Report metrics averaged over every N steps (TensorBoard, CSV, the console line); the
    /// JSONL log keeps every step.
    #[arg(long, help_heading = "Logging")]
    logging_steps: Option<u64>,
    /// At each logging step, write the step's completions with their rewards and advantages
    /// to completions.jsonl and print a few.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL", help_heading = "Logging")]
    log_completions: Option<bool>,
    /// How many completions --log-completions prints (default: all).
    #[arg(long, help_heading = "Logging")]
    num_completions_to_print: Option<usize>,

    #[command(flatten)]
    compute: ComputeArgs,
}

/// The built-in default's settings: what makes RL visibly help on the addition task within
/// a couple of minutes on two cores.
pub fn builtin_defaults() -> DapoConfig {
    let mut c = DapoConfig {
        steps: 1500,
        batch_size: 32,
        group_size: 8,
        learning_rate: 3e-4,
        eval_every: 250,
        eval_size: 300,
        output_dir: PathBuf::from("runs/dapo"),
        ..DapoConfig::default()
    };
    c.sampling.max_new_tokens = 5;
    c.sampling.temperature = 1.0;
    c
}

impl TrainArgs {
    /// The flags given, each as (flag, dotted setting, value): one setting per flag (only
    /// `--clip-ratio` sets both clip bounds, as TRL's `epsilon` does).
    fn flag_layer(&self) -> Result<Vec<(String, String, Value)>> {
        let mut out: Vec<(String, String, Value)> = Vec::new();
        macro_rules! put {
            ($($field:ident => $path:expr),* $(,)?) => {$(
                if let Some(v) = &self.$field {
                    let flag = format!("--{}", stringify!($field).replace('_', "-"));
                    let value = serde_json::to_value(v).expect("flag values serialise");
                    // JSON has no NaN or infinity: a float flag that serialises to null was one.
                    if value.is_null() {
                        return Err(Error::Invalid(format!("{flag}: {v:?} is not a finite number")));
                    }
                    out.push((flag, $path.to_string(), value));
                }
            )*};
        }
        put!(
            model => "model", tokenizer => "tokenizer", dataset => "dataset", eval_dataset => "eval_dataset", output_dir => "output_dir",
            seed => "seed", warmup_sft_steps => "warmup_sft_steps", skip_bad_lines => "skip_bad_lines",
            reward_mixer => "reward_mixer", math_scorer => "math_scorer", scorer_timeout => "scorer_timeout",
            steps => "steps", batch_size => "batch_size", group_size => "group_size",
            num_iterations => "num_iterations", mini_batches => "mini_batches",
            micro_batch_size => "micro_batch_size", learning_rate => "learning_rate",
            lr_scheduler_type => "lr_scheduler_type", min_learning_rate => "min_learning_rate",
            warmup_steps => "warmup_steps", weight_decay => "adamw.weight_decay", adam_beta1 => "adamw.beta1",
            adam_beta2 => "adamw.beta2", adam_epsilon => "adamw.eps", max_grad_norm => "max_grad_norm",
            loss_type => "objective.loss_type", importance_sampling_level => "objective.importance_sampling_level",
            clip_ratio_low => "objective.eps_low", clip_ratio_high => "objective.eps_high",
            delta => "objective.delta", clip_ratio_c => "objective.clip_ratio_c", kl_coef => "objective.beta",
            kl_estimator => "objective.kl_estimator", use_bias_correction_kl => "objective.use_bias_correction_kl",
            kl_target => "kl_target", kl_horizon => "kl_horizon", entropy_coef => "objective.entropy_coef",
            top_entropy_quantile => "objective.top_entropy_quantile",
            sapo_temperature_pos => "objective.sapo_temperature_pos",
            sapo_temperature_neg => "objective.sapo_temperature_neg", vespo_k_pos => "objective.vespo_k_pos",
            vespo_lambda_pos => "objective.vespo_lambda_pos", vespo_k_neg => "objective.vespo_k_neg",
            vespo_lambda_neg => "objective.vespo_lambda_neg", chunk_rows => "objective.chunk_rows",
            advantage_eps => "advantage.eps", advantage_clip => "advantage.clip",
            max_new_tokens => "sampling.max_new_tokens", temperature => "sampling.temperature",
            top_k => "sampling.top_k", top_p => "sampling.top_p", stop_token_ids => "sampling.stop_token_ids",
            stop_strings => "sampling.stop_strings", dynamic_sampling => "dynamic_sampling",
            max_sampling_rounds => "max_sampling_rounds", overlong_buffer_len => "overlong_buffer_len",
            overlong_penalty_factor => "overlong_penalty_factor", mask_truncated_completions => "mask_truncated",
            max_prompt_length => "max_prompt_length", shuffle_dataset => "shuffle_dataset", grn => "grn.enabled",
            curriculum_alpha => "curriculum.alpha", curriculum_floor => "curriculum.floor",
            curriculum_prior => "curriculum.prior", curriculum_reward_min => "curriculum.reward_min",
            curriculum_reward_max => "curriculum.reward_max",
            eval_every => "eval_every", eval_size => "eval_size", save_every => "save_every",
            save_total_limit => "save_total_limit", logging_steps => "logging_steps", report_to => "report_to",
            log_completions => "log_completions",
            num_completions_to_print => "num_completions_to_print",
        );
        if let Some(e) = self.clip_ratio {
            for p in ["objective.eps_low", "objective.eps_high"] {
                if !out.iter().any(|(_, q, _)| q == p) {
                    out.push(("--clip-ratio".into(), p.into(), Value::from(e)));
                }
            }
        }
        if let Some(s) = &self.scale_rewards {
            let v = match s.as_str() {
                "group" | "true" => "group",
                "batch" => "batch",
                "none" | "false" => "none",
                _ => {
                    return Err(Error::Invalid(format!(
                        "--scale-rewards: `{s}` is not one of group, batch, none, true, false"
                    )))
                }
            };
            out.push(("--scale-rewards".into(), "advantage.scaling".into(), Value::from(v)));
        }
        if !self.scorer_cmd.is_empty() {
            out.push((
                "--scorer-cmd".into(),
                "scorer_cmds".into(),
                serde_json::to_value(&self.scorer_cmd).expect("strings"),
            ));
        }
        if !self.judge_model.is_empty() {
            out.push((
                "--judge-model".into(),
                "judge_models".into(),
                serde_json::to_value(&self.judge_model).expect("paths"),
            ));
        }
        match self.curriculum {
            Some(true) if !out.iter().any(|(_, p, _)| p.starts_with("curriculum.")) => {
                out.push(("--curriculum".into(), "curriculum".into(), serde_json::json!({})));
            }
            Some(false) => out.push(("--curriculum".into(), "curriculum".into(), Value::Null)),
            _ => {}
        }
        if let Some(p) = &self.safety {
            let rules = SafetyConfig::from_path(p)?;
            out.push(("--safety".into(), "safety".into(), serde_json::to_value(rules).expect("rules serialise")));
        }
        for kv in &self.set {
            let Some((k, v)) = kv.split_once('=') else {
                return Err(Error::Invalid(format!("--set {kv}: expected KEY=VALUE")));
            };
            let value = serde_json::from_str(v).unwrap_or_else(|_| Value::from(v));
            out.push((format!("--set {k}"), k.trim().to_string(), value));
        }
        Ok(out)
    }
}

/// The run's settings from the layers, and the lines describing what overrode what.
fn settings(a: &TrainArgs) -> Result<(TrainSettings, Vec<String>)> {
    let flags = a.flag_layer()?;
    let mut notes = Vec::new();
    let file = match &a.config {
        Some(p) => {
            let (v, dropped) = read_settings(p)?;
            notes.extend(dropped.into_iter().map(|d| format!("{}: {d}", p.display())));
            Some(v)
        }
        None => None,
    };
    let mut flag_tree = Value::Object(Default::default());
    for (_, path, v) in &flags {
        set_path(&mut flag_tree, path, v.clone());
    }
    let saved = match &a.resume {
        Some(dir) => {
            let state = read_state(dir)?;
            match state.get("settings") {
                Some(s) if s.is_object() => Some(s.clone()),
                _ => {
                    notes.push(format!(
                        "{} holds no saved run settings (written by an older version): starting from the \
                         defaults and the flags given",
                        dir.display()
                    ));
                    None
                }
            }
        }
        None => None,
    };
    // The built-in default is the run with no model and no dataset from any layer.
    let names = |v: Option<&Value>, k: &str| v.and_then(|v| v.get(k)).is_some_and(|x| !x.is_null());
    let builtin =
        saved.is_none() && !["model", "dataset"].iter().any(|k| names(file.as_ref(), k) || names(Some(&flag_tree), k));
    let defaults = TrainSettings {
        sources: RunSources::default(),
        trainer: if builtin { builtin_defaults() } else { DapoConfig::default() },
    };
    let mut v = defaults.to_value();
    if let Some(s) = &saved {
        merge(&mut v, s);
    }
    // The resumed run's settings, read back through the settings types so the comparison
    // below sees values as they are used (f32 settings, defaults of fields an older
    // checkpoint did not save).
    let before = match &saved {
        Some(_) => Some(TrainSettings::from_value(&v, "the saved settings")?.to_value()),
        None => None,
    };
    if let Some(f) = &file {
        merge(&mut v, f);
    }
    merge(&mut v, &flag_tree);
    let origin = a.config.as_ref().map_or("the command line".to_string(), |p| format!("{} or the flags", p.display()));
    let s = TrainSettings::from_value(&v, &origin)?;
    s.trainer.validate().map_err(|e| match &a.config {
        Some(p) => Error::config(p, e.to_string()),
        None => e,
    })?;
    if let Some(before) = &before {
        for (path, old, new) in changes(before, &s.to_value()) {
            let by = flags
                .iter()
                .find(|(_, p, _)| path == *p || path.starts_with(&format!("{p}.")))
                .map(|(f, _, _)| f.clone())
                .unwrap_or_else(|| match &a.config {
                    Some(p) => p.display().to_string(),
                    None => "this version's defaults".into(),
                });
            notes.push(format!("resume: {path} = {new} (was {old}; set by {by})"));
        }
    }
    Ok((s, notes))
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

/// The reward sources: the math scorer, judge models and external commands, side by side.
fn scorer(src: &RunSources) -> Result<Box<dyn Scorer>> {
    if !(src.scorer_timeout.is_finite() && src.scorer_timeout > 0.0 && src.scorer_timeout <= 1e9) {
        return Err(Error::Invalid(format!(
            "--scorer-timeout must be a number of seconds in (0, 1e9], got {}",
            src.scorer_timeout
        )));
    }
    let mut parts: Vec<Box<dyn Scorer>> = Vec::new();
    let others = !src.judge_models.is_empty() || !src.scorer_cmds.is_empty();
    if src.math_scorer.unwrap_or(!others) {
        parts.push(Box::new(MathScorer));
    }
    for dir in &src.judge_models {
        check_model_dir(dir)?;
        parts.push(Box::new(JudgeScorer::load(dir)?));
    }
    let timeout = std::time::Duration::from_secs_f64(src.scorer_timeout);
    for c in &src.scorer_cmds {
        parts.push(Box::new(ExternalScorer::from_command_line(c)?.with_timeout(timeout)));
    }
    if parts.len() == 1 {
        return Ok(parts.pop().expect("one part"));
    }
    Ok(Box::new(MultiScorer::new(parts)?))
}

/// The built-in default's policy: a tiny GPT-2 warm-started on the addition task by SFT.
fn warm_start<K: Backend>(k: K, tok: &Tokenizer, train: &Path, out: &Path, steps: u64, seed: u64) -> Result<Gpt2<K>> {
    let cfg = Gpt2Config::named("tiny", tok.vocab_size())?.with_eos(tok.eos_id());
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

/// A few of a logging step's completions as a short table (TRL's `log_completions` print):
/// prompt, completion, mixed reward, advantage, each on one line and cut to fit.
fn completions_table(r: &StepRecord, n: Option<usize>) -> String {
    let cut = |s: &str, w: usize| {
        let one: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        if one.chars().count() > w {
            format!("{}…", one.chars().take(w - 1).collect::<String>())
        } else {
            format!("{one:<w$}")
        }
    };
    let mut out =
        format!("step {} completions:\n  {:<24} {:<32} {:>7} {:>7}", r.step, "prompt", "completion", "reward", "adv");
    for s in r.samples.iter().take(n.unwrap_or(usize::MAX)) {
        out += &format!("\n  {} {} {:>7.3} {:>7.3}", cut(&s.prompt, 24), cut(&s.completion, 32), s.reward, s.advantage);
    }
    out
}

fn print_eval(label: &str, r: &EvalReport) {
    let acc = r.accuracy.map(|a| format!("{:.1}%", 100.0 * a)).unwrap_or_else(|| "n/a".into());
    let metrics: Vec<String> = r.metrics.iter().map(|(k, v)| format!("{k} {v:.3}")).collect();
    eprintln!("{label}: held-out accuracy {acc} on {} prompts ({})", r.n, metrics.join(", "));
}

/// The settings as `key = value` pairs, a few to a line.
fn print_settings(s: &TrainSettings) {
    let pairs: Vec<String> = leaves(&s.to_value()).into_iter().map(|(k, v)| format!("{k} = {v}")).collect();
    eprintln!("settings:");
    let mut line = String::new();
    for p in pairs {
        if !line.is_empty() && line.len() + p.len() > 100 {
            eprintln!("  {line}");
            line.clear();
        }
        if !line.is_empty() {
            line.push_str("; ");
        }
        line.push_str(&p);
    }
    if !line.is_empty() {
        eprintln!("  {line}");
    }
}

/// Runs `dapo train`.
pub fn run(mut a: TrainArgs) -> Result<()> {
    // A checkpoint being replaced when the last run died is put back before it is read.
    let mut locks = Vec::new();
    if a.resume.as_deref() == Some(Path::new("auto")) {
        // The output directory comes from the settings without a resume (flags, --config,
        // defaults); its latest complete checkpoint is the one to continue.
        a.resume = None;
        let out = settings(&a)?.0.trainer.output_dir;
        if out.is_dir() {
            lock_and_recover(&out, &mut locks)?;
        }
        a.resume = latest_checkpoint(&out)?;
        match &a.resume {
            Some(c) => eprintln!("resume auto: the latest complete checkpoint is {}", c.display()),
            None => {
                eprintln!("resume auto: no complete checkpoint in {}; starting fresh", out.display());
                a.overwrite_output_dir = true;
            }
        }
    }
    if let Some(parent) = a.resume.as_ref().and_then(|r| r.parent()).filter(|p| p.is_dir()) {
        lock_and_recover(parent, &mut locks)?;
    }
    let (settings, notes) = settings(&a)?;
    for n in &notes {
        eprintln!("{n}");
    }
    let resolved = a.compute.resolve()?;
    on_backend!(resolved, k => train_on(k, &a, settings, &mut locks))
}

/// A fresh run's output directory: one holding a previous run's checkpoints or logs is
/// refused (appending to its log and leaving stale checkpoints beside new ones would mix two
/// runs), unless `overwrite` clears them first.
pub(super) fn fresh_output_dir(out: &Path, overwrite: bool) -> Result<()> {
    let previous = previous_run(out)?;
    if previous.is_empty() {
        return Ok(());
    }
    if !overwrite {
        let shown: Vec<&str> = previous.iter().take(4).map(String::as_str).collect();
        return Err(Error::Invalid(format!(
            "{} holds a previous run ({}{}); pass --overwrite-output-dir to replace it, --resume auto to continue \
             it, or choose another --output-dir",
            out.display(),
            shown.join(", "),
            if previous.len() > 4 { ", …" } else { "" }
        )));
    }
    eprintln!("overwrite: clearing the previous run in {} ({})", out.display(), previous.join(", "));
    clear_previous_run(out)
}

/// Locks `dir` for this run (unless one of `held` already locks it) and recovers any
/// checkpoint an interrupted run was replacing there.
pub(super) fn lock_and_recover(dir: &Path, held: &mut Vec<DirLock>) -> Result<()> {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let dir_c = canon(dir);
    if !held.iter().any(|l| l.path().parent().map(canon).as_deref() == Some(dir_c.as_path())) {
        held.push(DirLock::acquire(dir)?);
    }
    for action in recover_dirs(dir)? {
        eprintln!("recovery: {action}");
    }
    Ok(())
}

/// The rest of `dapo train`, on the backend `--device` resolved to.
fn train_on<K: Backend>(k: K, a: &TrainArgs, mut s: TrainSettings, locks: &mut Vec<DirLock>) -> Result<()> {
    let out = s.trainer.output_dir.clone();
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
    lock_and_recover(&out, locks)?;
    if a.resume.is_none() {
        fresh_output_dir(&out, a.overwrite_output_dir)?;
    }
    let builtin = s.sources.model.is_none() && s.sources.dataset.is_none();
    if builtin {
        let dir = out.join("data");
        let (train, heldout) = arithmetic::write_addition_task(&dir, s.trainer.seed)?;
        eprintln!("data: built-in two-digit addition task, written to {}", dir.display());
        s.sources.dataset = Some(train);
        s.sources.eval_dataset = s.sources.eval_dataset.or(Some(heldout));
    }
    let train_path = s.sources.dataset.clone().ok_or_else(|| {
        Error::Invalid("--model needs --dataset (a JSONL task file); without both, the built-in task runs".into())
    })?;
    let cfg = s.trainer.clone();
    let mut data = TaskDataset::load(&train_path, s.sources.skip_bad_lines)?;
    for skipped in &data.skipped {
        eprintln!("warning: skipped {skipped}");
    }
    let mut eval =
        s.sources.eval_dataset.as_ref().map(|p| TaskDataset::load(p, s.sources.skip_bad_lines)).transpose()?;
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

    // The policy: the resumed checkpoint, the given directory, or the built-in warm start.
    let model_dir = a.resume.clone().or(s.sources.model.clone());
    let (model, tok) = match &model_dir {
        Some(dir) => {
            check_model_dir(dir)?;
            load_checkpoint(dir, s.sources.tokenizer.as_deref(), k)?
        }
        None => {
            let tok = Tokenizer::default_char();
            let m = warm_start(k, &tok, &train_path, &out, s.sources.warmup_sft_steps, cfg.seed)?;
            (m, tok)
        }
    };
    let ends = match &s.sources.model {
        Some(dir) => EndTokens::of_dir(dir, model.config(), &tok, &cfg.sampling.stop_token_ids)?,
        None => EndTokens::of_model(model.config(), &tok, &cfg.sampling.stop_token_ids),
    };
    for n in &ends.notes {
        eprintln!("warning: {n}");
    }
    if ends.ids.is_empty() {
        eprintln!("warning: no end-of-sequence token found: every completion runs to --max-new-tokens");
    } else {
        eprintln!("end tokens: {}", ends.sources.join(", "));
    }
    let mut trainer = DapoTrainer::new(
        model,
        tok,
        scorer(&s.sources)?,
        FeedbackMapping::identity(),
        mixer(s.sources.reward_mixer.as_deref())?,
        cfg.clone(),
    )?;
    trainer.set_end_tokens(ends.ids)?;
    if trainer.model().has_policy_grn() {
        let g = trainer.model().param("grn.gamma").unwrap_or_default();
        let b = trainer.model().param("grn.beta").unwrap_or_default();
        let at_zero = g.iter().chain(&b).all(|&x| x == 0.0);
        eprintln!(
            "grn: causal GRN in front of the policy head, eps {}{}",
            trainer.model().config().grn.eps,
            if at_zero { ", zero at init (changes nothing until it learns)" } else { ", loaded from the checkpoint" }
        );
    }
    let pool = trainer.prepare(&data)?;
    if pool.dropped + pool.truncated > 0 {
        eprintln!(
            "data: {} prompts; {} dropped (no room for {} new tokens below n_positions {}), {} truncated to \
             max_prompt_length",
            data.len(),
            pool.dropped,
            cfg.sampling.max_new_tokens,
            trainer.model().config().n_positions,
            pool.truncated
        );
    }
    trainer.set_run_settings(s.to_value());
    print_settings(&s);
    let path = out.join(SETTINGS_FILE);
    std::fs::write(&path, serde_json::to_vec_pretty(&s.to_value()).expect("settings serialise"))
        .map_err(|e| Error::io(&path, e))?;
    if let Some(dir) = &a.resume {
        trainer.resume(dir)?;
        eprintln!("resumed from {} at step {}", dir.display(), trainer.steps_done());
    }

    let interrupt = Interrupt::install();
    let progress = Progress::new(cfg.steps, trainer.steps_done(), std::time::Duration::from_secs(30));
    let start = std::time::Instant::now();
    let mut tokens = 0usize;
    let mut told = false;
    let print_n = cfg.num_completions_to_print;
    let mut on_step = |r: &StepRecord| {
        if interrupt.requested() && !told {
            told = true;
            progress.println(format!(
                "{}: finishing this step and writing a checkpoint (send it again to quit now)",
                interrupt.name()
            ));
        }
        tokens += r.tokens;
        for e in &r.safety {
            progress.println(format!("step {}: {e}", r.step));
        }
        if r.logged.is_some() && !r.samples.is_empty() && cfg.log_completions {
            progress.println(completions_table(r, print_n));
        }
        progress.step(&StepLine {
            step: r.step,
            reward: r.reward_mean,
            accuracy: r.accuracy,
            kl: f64::from(r.rl.kl),
            tokens_per_s: tokens as f64 / start.elapsed().as_secs_f64().max(1e-9),
            logging_step: r.logged.is_some(),
        });
    };
    let mut on_eval = |step: u64, r: &EvalReport| {
        let acc = r.accuracy.map(|a| format!("{:.1}%", 100.0 * a)).unwrap_or_else(|| "n/a".into());
        progress.println(format!("step {step}: held-out accuracy {acc}"));
    };
    let result = trainer.train(&data, eval.as_ref(), Some(&interrupt.stop), &mut on_step, &mut on_eval);
    progress.end();
    let report = result?;
    // A resumed run has no "before" of its own, and an interrupted one no "after".
    if let Some((0, first)) = report.evals.first() {
        print_eval("before RL", first);
    }
    if let Some((_, last)) = report.evals.last().filter(|(s, _)| *s == trainer.config().steps) {
        print_eval("after RL", last);
    }
    let final_dir = out.join(crate::checkpoint::run_dir::FINAL_DIR);
    eprintln!(
        "{} steps in {:.1}s; log: {}; checkpoint: {}{}",
        trainer.steps_done(),
        start.elapsed().as_secs_f64(),
        out.join(LOG_FILE).display(),
        report.checkpoints.last().map(|p| p.display().to_string()).unwrap_or_else(|| "none".into()),
        if report.interrupted { String::new() } else { format!("; final model: {}", final_dir.display()) }
    );
    if report.interrupted {
        return Err(Error::Interrupted {
            msg: format!(
                "interrupted by {} at step {}; resume with --resume {}",
                interrupt.name(),
                trainer.steps_done(),
                report.checkpoints.last().map(|p| p.display().to_string()).unwrap_or_default()
            ),
            code: interrupt.exit_code(),
        });
    }
    Ok(())
}

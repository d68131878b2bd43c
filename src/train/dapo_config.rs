//! The DAPO trainer's settings: one struct, one home for each setting. Defaults follow DAPO
//! (ε_low 0.2, ε_high 0.28, token-mean loss, no KL, constant learning rate) and TRL's
//! GRPOTrainer where DAPO is silent (AdamW betas, advantage eps, KL bias correction).
//!
//! Settings files and flags reach it through [`crate::train::settings`], which also accepts
//! TRL's `GRPOConfig` names; this module only defines the fields and what makes them valid.
//! The sampling temperature and the completion-length cap are set once, in [`SamplingConfig`]:
//! [`DapoConfig::objective_config`] copies them into the objective (temperature 1 when
//! sampling is greedy), whose own fields for them are not read from a settings file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::grn::GrnConfig;
use crate::optim::{AdamWConfig, LrDecay, LrSchedule};
use crate::report::ReportTo;
use crate::rl::advantage::AdvantageConfig;
use crate::rl::curriculum::CurriculumConfig;
use crate::rl::objective::ObjectiveConfig;
use crate::rl::safety::SafetyConfig;
use crate::rollout::SamplingConfig;

/// Everything a DAPO run needs besides the model, tokenizer, data and scorer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DapoConfig {
    /// RL steps (one rollout + update round each). TRL: `max_steps`.
    pub steps: u64,
    /// Prompts per step.
    pub batch_size: usize,
    /// Completions per prompt (G, at least 2). TRL: `num_generations`.
    pub group_size: usize,
    /// Peak learning rate.
    pub learning_rate: f32,
    /// How the learning rate decays after warmup: constant, linear or cosine (TRL's
    /// `lr_scheduler_type` names).
    pub lr_scheduler_type: LrDecay,
    /// Where linear and cosine decay end (0: decay to zero, as transformers does). Must stay 0
    /// with a constant rate, so a file written for another schedule is not silently flattened.
    pub min_learning_rate: f32,
    /// Linear warmup steps.
    pub warmup_steps: u64,
    /// AdamW moments, eps and weight decay.
    pub adamw: AdamWConfig,
    /// Global-norm gradient clipping (0 disables it).
    pub max_grad_norm: f32,
    /// Passes over each step's rollouts (μ); >1 makes the ratio differ from 1.
    pub num_iterations: usize,
    /// Optimizer steps per pass: the step's sequences are shuffled (seeded) and split into this
    /// many minibatches. TRL: `steps_per_generation / gradient_accumulation_steps`.
    pub mini_batches: usize,
    /// Sequences per forward/backward pass within a minibatch; their gradients accumulate as
    /// TRL's gradient accumulation does (TRL: `per_device_train_batch_size`). 0: the whole
    /// minibatch in one pass.
    pub micro_batch_size: usize,
    /// The loss: type, clip range, KL β (the initial value when adapted), KL estimator,
    /// entropy bonus.
    pub objective: ObjectiveConfig,
    /// Adapt β toward this per-token KL (verl's adaptive controller); `None` keeps β fixed.
    pub kl_target: Option<f64>,
    /// Horizon of the adaptive KL controller, in sequences: each step moves β by at most
    /// ±20 %·(sequences in the step)/horizon (verl's default 10,000).
    pub kl_horizon: f64,
    /// How completions are sampled: temperature (also the objective's, which is 1 when this
    /// is 0, greedy), top-k/top-p, the completion length cap (also dr_grpo's and the overlong
    /// penalty's length), stop tokens (beside the model's end tokens) and stop strings.
    pub sampling: SamplingConfig,
    /// Group-relative advantage normalisation (TRL: `scale_rewards`).
    pub advantage: AdvantageConfig,
    /// Drop groups whose mixed rewards are all equal and sample more prompts (DAPO).
    pub dynamic_sampling: bool,
    /// Generation rounds per step when refilling after dynamic sampling.
    pub max_sampling_rounds: usize,
    /// DAPO's soft overlong punishment: the width (in tokens) of the ramp before
    /// `sampling.max_new_tokens` over which the penalty grows to `overlong_penalty_factor`
    /// (verl: `overlong_buffer.len`). `None` disables it.
    pub overlong_buffer_len: Option<usize>,
    /// The overlong penalty at the full completion length (verl: `overlong_buffer.penalty_factor`).
    pub overlong_penalty_factor: f64,
    /// Leave truncated completions (no end token within the cap) out of the loss. TRL:
    /// `mask_truncated_completions`.
    pub mask_truncated: bool,
    /// Prompts longer than this many tokens keep only their last `max_prompt_length` tokens
    /// (TRL's left truncation). `None`: prompts are used whole, and one that leaves no room for
    /// the completion below the model's context is dropped at load (with a count).
    pub max_prompt_length: Option<usize>,
    /// Visit the prompts in a seeded shuffled order, one epoch after another (TRL's
    /// `shuffle_dataset`); `false` keeps file order.
    pub shuffle_dataset: bool,
    /// Sample prompts by curriculum weights over `task_id` instead of in epochs.
    pub curriculum: Option<CurriculumConfig>,
    /// Safety rules over each step's metrics (`reward_mean`, `kl` of the previous step,
    /// `rewards.<key>` means, `tags.<key>` means): skip the update, scale the LR, raise β.
    pub safety: Option<SafetyConfig>,
    /// Evaluate on the held-out split every this many steps (0: only before and after). TRL:
    /// `eval_steps`.
    pub eval_every: u64,
    /// Held-out prompts per evaluation (greedy decoding).
    pub eval_size: usize,
    /// Write a checkpoint every this many steps (0: only at the end). TRL: `save_steps`.
    pub save_every: u64,
    /// Keep at most this many `checkpoint-N` directories, deleting the oldest (TRL:
    /// `save_total_limit`); `None` keeps them all.
    pub save_total_limit: Option<usize>,
    /// Where metrics go: `jsonl` (`dapo_log.jsonl`, one record per step; the default),
    /// `tensorboard` (event files under `OUTPUT_DIR/runs/`), `csv` (`OUTPUT_DIR/metrics.csv`),
    /// `all`, or `none`. TRL: `report_to`.
    pub report_to: ReportTo,
    /// Report metrics (averaged over the window, as TRL's `log` does) every this many steps,
    /// and after the last one. TRL: `logging_steps`. The JSONL log keeps one record per step.
    pub logging_steps: u64,
    /// At each logging step, write the step's completions (prompt, completion, each reward,
    /// the mixed reward, the advantage) to `completions.jsonl` and print a few. TRL:
    /// `log_completions`.
    pub log_completions: bool,
    /// How many completions `log_completions` prints (`None`: all of them). TRL:
    /// `num_completions_to_print`.
    pub num_completions_to_print: Option<usize>,
    /// Where checkpoints and `dapo_log.jsonl` go.
    pub output_dir: PathBuf,
    /// Seed of prompt order, rollouts and minibatch shuffling.
    pub seed: u64,
    /// Global Response Normalization (the seed's `GRNConfig`): with `enabled` and
    /// `apply_to_policy`, a causal GRN at zero init is put in front of the policy's lm_head
    /// (and the reference's) and trained with it; a model that already has one keeps it.
    pub grn: GrnConfig,
}

impl Default for DapoConfig {
    fn default() -> Self {
        DapoConfig {
            steps: 100,
            batch_size: 8,
            group_size: 8,
            learning_rate: 1e-5,
            lr_scheduler_type: LrDecay::Constant,
            min_learning_rate: 0.0,
            warmup_steps: 0,
            // TRL's (transformers') AdamW defaults: betas (0.9, 0.999), eps 1e-8, no decay.
            adamw: AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 },
            max_grad_norm: 1.0,
            num_iterations: 1,
            mini_batches: 1,
            micro_batch_size: 0,
            objective: ObjectiveConfig::default(),
            kl_target: None,
            kl_horizon: 10_000.0,
            sampling: SamplingConfig::default(),
            advantage: AdvantageConfig::default(),
            dynamic_sampling: false,
            max_sampling_rounds: 3,
            overlong_buffer_len: None,
            overlong_penalty_factor: 1.0,
            mask_truncated: false,
            max_prompt_length: None,
            shuffle_dataset: true,
            curriculum: None,
            safety: None,
            eval_every: 0,
            eval_size: 200,
            save_every: 0,
            save_total_limit: None,
            report_to: ReportTo { jsonl: true, ..ReportTo::NONE },
            logging_steps: 10,
            log_completions: false,
            num_completions_to_print: None,
            output_dir: PathBuf::from("runs/dapo"),
            seed: 0,
            grn: GrnConfig::default(),
        }
    }
}

impl DapoConfig {
    /// Sequences per forward/backward pass over `whole` sequences: `micro_batch_size`, or all
    /// of them when it is 0.
    pub fn micro_batch(&self, whole: usize) -> usize {
        if self.micro_batch_size == 0 {
            whole
        } else {
            self.micro_batch_size.min(whole.max(1))
        }
    }

    /// The objective's settings with the sampling temperature (1 for greedy) and the
    /// completion-length cap filled in from [`DapoConfig::sampling`], their one home.
    pub fn objective_config(&self) -> ObjectiveConfig {
        let mut o = self.objective.clone();
        o.temperature = if self.sampling.temperature > 0.0 { self.sampling.temperature } else { 1.0 };
        o.max_completion_length = Some(self.sampling.max_new_tokens);
        o
    }

    /// The learning-rate schedule over `steps`.
    pub fn lr_schedule(&self) -> LrSchedule {
        LrSchedule {
            max_lr: self.learning_rate,
            min_lr: self.min_learning_rate,
            warmup: self.warmup_steps,
            total: self.steps,
            decay: self.lr_scheduler_type,
        }
    }

    /// Reads a settings file (TOML, YAML or JSON, TRL names accepted) over the defaults; see
    /// [`crate::train::settings`]. Errors name the file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let mut v = serde_json::to_value(DapoConfig::default()).expect("the defaults serialise");
        let (file, _) = crate::train::settings::read_settings(path)?;
        crate::train::settings::merge(&mut v, &file);
        let cfg: DapoConfig = crate::train::settings::from_tree(v, &path.display().to_string())?;
        cfg.validate().map_err(|e| Error::config(path, e.to_string()))?;
        Ok(cfg)
    }

    /// Rejects settings that cannot train; the message names the setting.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Invalid(format!("dapo config: {m}")));
        self.grn.validate()?;
        if self.batch_size == 0 {
            return bad("batch_size must be ≥ 1".into());
        }
        if self.save_total_limit == Some(0) {
            return bad("save_total_limit must be ≥ 1 (leave it unset to keep every checkpoint)".into());
        }
        if self.logging_steps == 0 {
            return bad("logging_steps must be ≥ 1".into());
        }
        if self.group_size < 2 {
            return bad(format!(
                "group_size (num_generations) is {}; it must be at least 2, since a group-relative advantage needs \
                 two completions of the same prompt to compare (TRL rejects this too)",
                self.group_size
            ));
        }
        // Products that size the step's buffers must not overflow before any allocation.
        let Some(seqs) = self.batch_size.checked_mul(self.group_size).filter(|&n| n <= 1 << 24) else {
            return bad(format!(
                "batch_size × group_size ({} × {}) is absurdly large (more than 16,777,216 completions a step)",
                self.batch_size, self.group_size
            ));
        };
        if self.num_iterations == 0 || self.mini_batches == 0 {
            return bad("num_iterations and mini_batches must be ≥ 1".into());
        }
        if self.mini_batches > seqs {
            return bad(format!("mini_batches ({}) exceeds the sequences per step ({seqs})", self.mini_batches));
        }
        for (name, lr) in [("learning_rate", self.learning_rate), ("min_learning_rate", self.min_learning_rate)] {
            if !(lr.is_finite() && lr >= 0.0) {
                return bad(format!("{name} must be finite and ≥ 0, got {lr}"));
            }
        }
        if self.lr_scheduler_type == LrDecay::Constant && self.min_learning_rate != 0.0 {
            return bad(format!(
                "min_learning_rate ({}) needs lr_scheduler_type linear or cosine; with a constant rate it would be \
                 ignored",
                self.min_learning_rate
            ));
        }
        if self.min_learning_rate > self.learning_rate {
            return bad(format!(
                "min_learning_rate ({}) exceeds learning_rate ({})",
                self.min_learning_rate, self.learning_rate
            ));
        }
        if !(self.max_grad_norm.is_finite() && self.max_grad_norm >= 0.0) {
            return bad(format!(
                "max_grad_norm must be finite and ≥ 0 (0 disables clipping), got {}",
                self.max_grad_norm
            ));
        }
        self.adamw.validate()?;
        if self.max_sampling_rounds == 0 {
            return bad("max_sampling_rounds must be ≥ 1".into());
        }
        if let Some(t) = self.kl_target {
            if !(t.is_finite() && t > 0.0) {
                return bad(format!("kl_target must be finite and > 0, got {t}"));
            }
            if self.objective.beta <= 0.0 {
                return bad(format!(
                    "kl_target ({t}) needs an initial beta (kl_coef) > 0: the adaptive rule multiplies β, so from 0 \
                     it would never move"
                ));
            }
        }
        if !(self.kl_horizon.is_finite() && self.kl_horizon > 0.0) {
            return bad(format!("kl_horizon must be finite and > 0, got {}", self.kl_horizon));
        }
        if let Some(b) = self.overlong_buffer_len {
            if b == 0 || b > self.sampling.max_new_tokens {
                return bad(format!(
                    "overlong_buffer_len ({b}) must be in 1..=max_new_tokens ({})",
                    self.sampling.max_new_tokens
                ));
            }
        }
        if !(self.overlong_penalty_factor.is_finite() && self.overlong_penalty_factor >= 0.0) {
            return bad(format!(
                "overlong_penalty_factor must be finite and ≥ 0, got {}",
                self.overlong_penalty_factor
            ));
        }
        if self.max_prompt_length == Some(0) {
            return bad("max_prompt_length must be ≥ 1".into());
        }
        if self.eval_size == 0 {
            return bad("eval_size must be ≥ 1 (held-out prompts per evaluation)".into());
        }
        self.objective_config().validate()?;
        self.sampling.validate()?;
        self.advantage.validate()?;
        if let Some(c) = &self.curriculum {
            c.validate()?;
        }
        if let Some(s) = &self.safety {
            s.validate()?;
        }
        Ok(())
    }
}

//! The DAPO trainer's settings: one struct, read from a TOML/YAML/JSON file (`--config`) and
//! overridden by command-line flags. Defaults follow DAPO (ε_low 0.2, ε_high 0.28, token-mean
//! loss, no KL) and TRL's GRPOTrainer where DAPO is silent.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::optim::AdamWConfig;
use crate::reward::ConfigFormat;
use crate::rl::advantage::AdvantageConfig;
use crate::rl::curriculum::CurriculumConfig;
use crate::rl::objective::ObjectiveConfig;
use crate::rl::safety::SafetyConfig;
use crate::rollout::SamplingConfig;

/// Everything a DAPO run needs besides the model, tokenizer, data and scorer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DapoConfig {
    /// RL steps (one rollout + update round each).
    pub steps: u64,
    /// Prompts per step.
    pub batch_size: usize,
    /// Completions per prompt (G).
    pub group_size: usize,
    /// Peak learning rate.
    pub learning_rate: f32,
    /// Learning rate at the end of the cosine decay.
    pub min_learning_rate: f32,
    /// Linear warmup steps.
    pub warmup_steps: u64,
    /// AdamW moments, eps and weight decay.
    pub adamw: AdamWConfig,
    /// Global-norm gradient clipping (0 disables it).
    pub max_grad_norm: f32,
    /// Passes over each step's rollouts (μ); >1 makes the ratio differ from 1.
    pub num_iterations: usize,
    /// Optimizer steps per pass: the step's sequences are split into this many minibatches.
    pub mini_batches: usize,
    /// Sequences per forward/backward pass within a minibatch; their gradients are accumulated
    /// (weighted as the loss type aggregates) before the optimizer step. 0: the whole minibatch
    /// in one pass.
    pub micro_batch_size: usize,
    /// The loss: type, clip range, KL β (the initial `kl_coef`), entropy bonus, temperature.
    pub objective: ObjectiveConfig,
    /// Adapt β toward this KL (PPO's rule); `None` keeps β fixed.
    pub kl_target: Option<f64>,
    /// Horizon of the adaptive KL controller, in steps.
    pub kl_horizon: f64,
    /// How completions are sampled (the objective's temperature is used for sampling too).
    pub sampling: SamplingConfig,
    /// Group-relative advantage normalisation.
    pub advantage: AdvantageConfig,
    /// Drop groups whose mixed rewards are all equal and sample more prompts (DAPO).
    pub dynamic_sampling: bool,
    /// Generation rounds per step when refilling after dynamic sampling.
    pub max_sampling_rounds: usize,
    /// DAPO's overlong penalty: `(max_len, cache_len)` in completion tokens; `None` disables it.
    pub overlong: Option<(usize, usize)>,
    /// Leave truncated completions (no stop token) out of the loss.
    pub mask_truncated: bool,
    /// Sample prompts by curriculum weights over `task_id` instead of uniformly.
    pub curriculum: Option<CurriculumConfig>,
    /// Safety rules over each step's metrics (`reward_mean`, `kl` of the previous step,
    /// `rewards.<key>` means, `tags.<key>` means): skip the update, scale the LR, raise β.
    pub safety: Option<SafetyConfig>,
    /// Evaluate on the held-out split every this many steps (0: only before and after).
    pub eval_every: u64,
    /// Held-out prompts per evaluation (greedy decoding).
    pub eval_size: usize,
    /// Write a checkpoint every this many steps (0: only at the end).
    pub save_every: u64,
    /// Where checkpoints and `dapo_log.jsonl` go.
    pub output_dir: PathBuf,
    /// Seed of prompt sampling and of every rollout.
    pub seed: u64,
}

impl Default for DapoConfig {
    fn default() -> Self {
        DapoConfig {
            steps: 100,
            batch_size: 8,
            group_size: 8,
            learning_rate: 1e-5,
            min_learning_rate: 1e-5,
            warmup_steps: 0,
            adamw: AdamWConfig { weight_decay: 0.0, ..AdamWConfig::default() },
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
            overlong: None,
            mask_truncated: false,
            curriculum: None,
            safety: None,
            eval_every: 0,
            eval_size: 200,
            save_every: 0,
            output_dir: PathBuf::from("runs/dapo"),
            seed: 0,
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
            self.micro_batch_size
        }
    }

    /// Reads a config file, by extension (`.toml`, `.yaml`/`.yml`, `.json`); unknown keys are
    /// errors naming the file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = crate::error::read_to_string(path)?;
        let cfg: DapoConfig = match ConfigFormat::from_path(path)? {
            ConfigFormat::Toml => toml::from_str(&text).map_err(|e| Error::config(path, e.to_string()))?,
            ConfigFormat::Yaml => serde_norway::from_str(&text).map_err(|e| Error::config(path, e.to_string()))?,
            ConfigFormat::Json => serde_json::from_str(&text).map_err(|e| Error::config(path, e.to_string()))?,
        };
        cfg.validate().map_err(|e| Error::config(path, e.to_string()))?;
        Ok(cfg)
    }

    /// Rejects settings that cannot train.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Invalid(format!("dapo config: {m}")));
        if self.batch_size == 0 || self.group_size == 0 {
            return bad(format!("batch_size ({}) and group_size ({}) must be ≥ 1", self.batch_size, self.group_size));
        }
        if self.num_iterations == 0 || self.mini_batches == 0 {
            return bad("num_iterations and mini_batches must be ≥ 1".into());
        }
        if self.mini_batches > self.batch_size * self.group_size {
            return bad(format!(
                "mini_batches ({}) exceeds the sequences per step ({})",
                self.mini_batches,
                self.batch_size * self.group_size
            ));
        }
        for (name, lr) in [("learning_rate", self.learning_rate), ("min_learning_rate", self.min_learning_rate)] {
            if !(lr.is_finite() && lr >= 0.0) {
                return bad(format!("{name} must be finite and ≥ 0, got {lr}"));
            }
        }
        if self.max_sampling_rounds == 0 {
            return bad("max_sampling_rounds must be ≥ 1".into());
        }
        if let Some(t) = self.kl_target {
            if !(t.is_finite() && t > 0.0) {
                return bad(format!("kl_target must be finite and > 0, got {t}"));
            }
        }
        self.objective.validate()?;
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

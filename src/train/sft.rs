//! Supervised fine-tuning: next-token cross-entropy on a dataset, AdamW with warmup + cosine,
//! gradient accumulation, periodic checkpoints and a JSONL log.

use crate::backend::Backend;
use crate::checkpoint::trainer_state::{write_states, HfTrainerState};
use crate::checkpoint::{model_dir::save_model_files, save_optimizer, write_dir_atomically};
use crate::data::{Batch, SftDataset};
use crate::error::{Error, Result};
use crate::model::grn::{GrnConfig, Head};
use crate::model::Gpt2;
use crate::optim::{AdamW, AdamWConfig, LrSchedule};
use crate::tokenizer::Tokenizer;
use crate::util::rng::Rng;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Everything an SFT run needs besides the model and the data.
#[derive(Clone, Debug)]
pub struct SftConfig {
    /// Sequences per micro-batch (B).
    pub batch_size: usize,
    /// Tokens per sequence (T).
    pub seq_len: usize,
    /// Micro-batches whose gradients are summed into one optimizer step.
    pub grad_accum: usize,
    /// Optimizer steps.
    pub steps: u64,
    /// Peak learning rate.
    pub lr: f32,
    /// Final learning rate of the cosine decay.
    pub min_lr: f32,
    /// Linear warmup steps.
    pub warmup: u64,
    /// AdamW hyperparameters.
    pub adamw: AdamWConfig,
    /// Global-norm clipping threshold (`None`: no clipping).
    pub max_grad_norm: Option<f32>,
    /// Seed for batch sampling.
    pub seed: u64,
    /// Write a checkpoint every this many steps (`None`: only at the end).
    pub save_every: Option<u64>,
    /// Where checkpoints and `sft_log.jsonl` go.
    pub output_dir: PathBuf,
    /// Keep at most this many `checkpoint-N` directories, deleting the oldest (`None`: all).
    pub save_total_limit: Option<usize>,
    /// GRN in front of the lm_head (see [`crate::train::dapo_config::DapoConfig::grn`]): a
    /// zero-initialised causal GRN is added when it applies to the policy and the model has
    /// none, and trained with the rest.
    pub grn: GrnConfig,
}

impl Default for SftConfig {
    fn default() -> Self {
        SftConfig {
            batch_size: 8,
            seq_len: 64,
            grad_accum: 1,
            steps: 200,
            lr: 1e-3,
            min_lr: 1e-4,
            warmup: 20,
            adamw: AdamWConfig::default(),
            max_grad_norm: Some(1.0),
            seed: 0,
            save_every: None,
            output_dir: PathBuf::from("runs/sft"),
            grn: GrnConfig::default(),
            save_total_limit: None,
        }
    }
}

impl SftConfig {
    /// Rejects settings that cannot train; the message names the flag.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Invalid(format!("sft: {m}")));
        self.grn.validate()?;
        for (name, v) in
            [("--batch-size", self.batch_size), ("--seq-len", self.seq_len), ("--grad-accum", self.grad_accum)]
        {
            if v == 0 {
                return bad(format!("{name} must be at least 1"));
            }
        }
        if self.steps == 0 {
            return bad("--steps must be at least 1".into());
        }
        if self.batch_size.checked_mul(self.seq_len).map_or(true, |n| n > 1 << 30) {
            return bad(format!("--batch-size × --seq-len ({} × {}) is absurdly large", self.batch_size, self.seq_len));
        }
        for (name, lr) in [("--learning-rate", self.lr), ("--min-lr", self.min_lr)] {
            if !(lr.is_finite() && lr >= 0.0) {
                return bad(format!("{name} must be finite and >= 0, got {lr}"));
            }
        }
        if let Some(n) = self.max_grad_norm {
            if !(n.is_finite() && n > 0.0) {
                return bad(format!("--max-grad-norm must be finite and > 0 (0 disables clipping), got {n}"));
            }
        }
        self.adamw.validate()
    }
}

/// What the training loop reports after each optimizer step.
#[derive(Clone, Debug)]
pub struct SftProgress {
    /// 1-based step just finished.
    pub step: u64,
    /// Total steps.
    pub total: u64,
    /// Mean training loss of this step.
    pub loss: f32,
    /// Learning rate used.
    pub lr: f32,
    /// Gradient norm before clipping.
    pub grad_norm: f32,
    /// Training throughput (input tokens per second, averaged over the run so far).
    pub tokens_per_sec: f64,
    /// A checkpoint written after this step, if any.
    pub checkpoint: Option<PathBuf>,
}

/// The outcome of a run.
#[derive(Clone, Debug)]
pub struct SftReport {
    /// Loss of the last step.
    pub final_loss: f32,
    /// Tokens processed.
    pub tokens: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Every checkpoint written, the final one last.
    pub checkpoints: Vec<PathBuf>,
}

/// Writes a full training checkpoint, the one layout of SFT and RL runs: the HF model
/// directory with its tokenizer files, the optimizer state, transformers' `trainer_state.json`
/// (`hf`) and dapo's resume state `dapo_state.json` (`state`), swapped into place atomically.
pub fn save_checkpoint<K: Backend>(
    dir: &Path,
    model: &Gpt2<K>,
    tok: &Tokenizer,
    opt: &AdamW<K>,
    hf: &HfTrainerState,
    state: &serde_json::Value,
) -> Result<()> {
    write_dir_atomically(dir, |tmp| {
        save_model_files(tmp, model, Some(tok))?;
        save_optimizer(&tmp.join(crate::checkpoint::optimizer_state::OPTIMIZER_FILE), model, opt)?;
        write_states(tmp, hf, state)
    })
}

/// Mean loss of `model` on `batches` fixed batches drawn with `seed` (no gradients).
pub fn eval_loss<K: Backend>(
    model: &mut Gpt2<K>,
    data: &SftDataset,
    b: usize,
    t: usize,
    batches: usize,
    seed: u64,
) -> Result<f32> {
    let mut rng = Rng::new(seed);
    let mut total = 0.0;
    for _ in 0..batches {
        let batch = data.batch(b, t, &mut rng);
        total += model.loss(&batch.inputs, &batch.targets, &batch.weights, b, t)?;
    }
    Ok(total / batches.max(1) as f32)
}

/// Trains `model` on `data`; `on_step` sees every step (for a progress bar).
pub fn train_sft<K: Backend>(
    model: &mut Gpt2<K>,
    tok: &Tokenizer,
    data: &SftDataset,
    cfg: &SftConfig,
    mut on_step: impl FnMut(&SftProgress),
) -> Result<SftReport> {
    cfg.validate()?;
    if cfg.grn.applies_to(Head::Policy) {
        model.add_policy_grn(cfg.grn)?;
    }
    let (b, t) = (cfg.batch_size, cfg.seq_len);
    if t > model.config().n_positions {
        return Err(Error::Invalid(format!(
            "--seq-len {t} exceeds the model's n_positions {}",
            model.config().n_positions
        )));
    }
    if tok.vocab_size() > model.config().vocab_size {
        return Err(Error::Invalid(format!(
            "the tokenizer has {} tokens but the model's vocab_size is {}",
            tok.vocab_size(),
            model.config().vocab_size
        )));
    }
    {
        use crate::model::memory::{activation_bytes, training_state_bytes};
        let m = model.config();
        let need = training_state_bytes(m, 0) * 3 / 4 + activation_bytes(m, (b * t) as u128);
        crate::util::mem::ensure_fits(
            need,
            model.backend().available_memory(),
            &format!("an SFT step of {b} × {t} tokens"),
            "--batch-size or --seq-len (use --grad-accum for larger batches)",
        )?;
    }
    data.check_trainable(t)?;
    std::fs::create_dir_all(&cfg.output_dir).map_err(|e| Error::io(&cfg.output_dir, e))?;
    let log_path = cfg.output_dir.join("sft_log.jsonl");
    let mut log = std::fs::File::create(&log_path).map_err(|e| Error::io(&log_path, e))?;
    let sched = LrSchedule::cosine(cfg.lr, cfg.min_lr, cfg.warmup, cfg.steps);
    let mut opt = AdamW::new(model, cfg.adamw);
    let mut rng = Rng::new(cfg.seed);
    let start = Instant::now();
    let mut tokens = 0u64;
    let mut checkpoints = Vec::new();
    let mut loss = f32::NAN;
    let mut batches: Vec<Batch> = Vec::with_capacity(cfg.grad_accum);
    let mut history = Vec::new();
    for step in 0..cfg.steps {
        batches.clear();
        batches.extend((0..cfg.grad_accum).map(|_| data.batch(b, t, &mut rng)));
        // Each batch's weights already average over its own trained tokens; scaling by
        // 1/accum makes the step's gradient the mean over micro-batches.
        let accum = cfg.grad_accum as f32;
        model.zero_grad();
        loss = 0.0;
        for batch in &batches {
            let w: Vec<f32> = batch.weights.iter().map(|w| w / accum).collect();
            loss += model.forward_backward(&batch.inputs, &batch.targets, &w, b, t)?;
            tokens += (b * t) as u64;
        }
        if !loss.is_finite() {
            return Err(Error::Invalid(format!("loss is {loss} at step {}; stopping", step + 1)));
        }
        let lr = sched.lr(step);
        let info = opt.step(model, lr, cfg.max_grad_norm)?;
        let done = step + 1;
        let secs = start.elapsed().as_secs_f64();
        let mut checkpoint = None;
        history.push(serde_json::json!({
            "loss": loss, "grad_norm": info.grad_norm, "learning_rate": lr, "num_tokens": tokens, "step": done,
        }));
        if cfg.save_every.is_some_and(|n| n > 0 && done % n == 0) || done == cfg.steps {
            let dir = cfg.output_dir.join(format!("checkpoint-{done}"));
            let state = serde_json::json!({ "step": done, "loss": loss, "lr": lr, "seed": cfg.seed, "tokens": tokens });
            let hf = HfTrainerState {
                global_step: done,
                max_steps: cfg.steps,
                logging_steps: 1,
                eval_steps: 0,
                save_steps: cfg.save_every.unwrap_or(0),
                train_batch_size: (b * cfg.grad_accum) as u64,
                num_input_tokens_seen: tokens,
                log_history: history.clone(),
            };
            save_checkpoint(&dir, model, tok, &opt, &hf, &state)?;
            if let Some(keep) = cfg.save_total_limit {
                let removed = crate::checkpoint::run_dir::prune_checkpoints(&cfg.output_dir, keep)?;
                checkpoints.retain(|c| !removed.contains(c));
            }
            checkpoints.push(dir.clone());
            checkpoint = Some(dir);
        }
        let rec = serde_json::json!({
            "step": done, "loss": loss, "lr": lr, "grad_norm": info.grad_norm,
            "clip_scale": info.clip_scale, "tokens": tokens, "seconds": secs,
        });
        writeln!(log, "{rec}").map_err(|e| Error::io(&log_path, e))?;
        on_step(&SftProgress {
            step: done,
            total: cfg.steps,
            loss,
            lr,
            grad_norm: info.grad_norm,
            tokens_per_sec: tokens as f64 / secs.max(1e-9),
            checkpoint,
        });
    }
    Ok(SftReport { final_loss: loss, tokens, seconds: start.elapsed().as_secs_f64(), checkpoints })
}

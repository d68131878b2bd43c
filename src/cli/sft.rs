//! `dapo sft`: supervised fine-tuning from a checkpoint or a named fresh architecture.

use super::device::on_backend;
use super::device::ComputeArgs;
use crate::backend::Backend;
use crate::checkpoint::{load_model, save_model};
use crate::data::{arithmetic, SftDataset};
use crate::error::{Error, Result};
use crate::model::grn::GrnConfig;
use crate::model::{Gpt2, Gpt2Config};
use crate::optim::AdamWConfig;
use crate::tokenizer::Tokenizer;
use crate::train::sft::{eval_loss, train_sft, SftConfig};
use std::path::PathBuf;

/// Arguments of `dapo sft`.
#[derive(clap::Args, Debug)]
pub struct SftArgs {
    /// Start from this checkpoint directory (config.json + model.safetensors [+ tokenizer.json]).
    #[arg(long, conflicts_with = "init")]
    model: Option<PathBuf>,
    /// Start from a freshly initialised architecture: tiny, small, gpt2 or gpt2-medium
    /// (default: tiny, when --model is not given).
    #[arg(long)]
    init: Option<String>,
    /// The tokenizer: a tokenizer.json, or a directory with one (or with GPT-2's vocab.json +
    /// merges.txt). Default: the checkpoint's; the built-in character-level tokenizer with --init.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Training data: JSONL ({"text"} or {"prompt","completion"|"answer"} per line) or plain
    /// text. Default: a generated two-digit addition task.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Held-out data in the same format, for the loss before and after training.
    #[arg(long)]
    eval_data: Option<PathBuf>,
    /// Directory for checkpoints (checkpoint-N/), sft_log.jsonl and the final model (final/).
    #[arg(long, default_value = "runs/sft")]
    output_dir: PathBuf,
    /// Start in an output directory that holds a previous run, deleting that run's checkpoints,
    /// log and final model first (without it such a start is refused).
    #[arg(long)]
    overwrite_output_dir: bool,
    /// Optimizer steps.
    #[arg(long, default_value_t = 1000)]
    steps: u64,
    /// Sequences per micro-batch (B).
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Tokens per sequence (T); longer examples are truncated.
    #[arg(long, default_value_t = 32)]
    seq_len: usize,
    /// Micro-batches accumulated into each optimizer step.
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    /// Peak learning rate (after warmup).
    #[arg(long, default_value_t = 3e-3)]
    learning_rate: f32,
    /// Learning rate at the end of the cosine decay.
    #[arg(long, default_value_t = 3e-4)]
    min_lr: f32,
    /// Linear warmup steps.
    #[arg(long, default_value_t = 20)]
    warmup: u64,
    /// AdamW decoupled weight decay (matrices and embeddings only).
    #[arg(long, default_value_t = 0.1)]
    weight_decay: f32,
    /// Clip the global gradient norm to this value (0 disables clipping).
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f32,
    /// Write a checkpoint every N steps (one is always written at the end).
    #[arg(long)]
    save_every: Option<u64>,
    /// Keep at most N checkpoints, deleting the oldest.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    save_total_limit: Option<u64>,
    /// Seed for initialisation and batch sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Put a causal GRN (Global Response Normalization, zero at init) in front of the lm_head
    /// and train it with the rest. A checkpoint that has one keeps it.
    #[arg(long)]
    grn: bool,
    #[command(flatten)]
    compute: ComputeArgs,
}

/// Runs `dapo sft`.
pub fn run(a: SftArgs) -> Result<()> {
    let resolved = a.compute.resolve()?;
    on_backend!(resolved, k => sft_on(k, &a))
}

/// The rest of `dapo sft`, on the backend `--device` resolved to.
fn sft_on<K: Backend>(k: K, a: &SftArgs) -> Result<()> {
    std::fs::create_dir_all(&a.output_dir).map_err(|e| Error::io(&a.output_dir, e))?;
    let mut locks = Vec::new();
    super::train::lock_and_recover(&a.output_dir, &mut locks)?;
    super::train::fresh_output_dir(&a.output_dir, a.overwrite_output_dir)?;
    let (mut model, tok) = match &a.model {
        Some(dir) => {
            let tok = match &a.tokenizer {
                Some(p) => Tokenizer::load(p)?,
                None => Tokenizer::from_dir(dir)?,
            };
            (load_model(dir, k)?, tok)
        }
        None => {
            let tok = match &a.tokenizer {
                Some(p) => Tokenizer::load(p)?,
                None => Tokenizer::default_char(),
            };
            let name = a.init.as_deref().unwrap_or("tiny");
            // The tokenizer's <|endoftext|> is the model's BOS/EOS, so generation stops there
            // (in transformers too, which reads config.json).
            let cfg = Gpt2Config::named(name, tok.vocab_size())?.with_eos(tok.eos_id());
            (Gpt2::random(k, cfg, a.seed)?, tok)
        }
    };
    let (train_path, eval_path) = match (&a.data, &a.eval_data) {
        (Some(d), e) => (d.clone(), e.clone()),
        (None, Some(_)) => return Err(Error::Invalid("--eval-data needs --data".into())),
        (None, None) => {
            let dir = a.output_dir.join("data");
            let (train, heldout) = arithmetic::write_addition_task(&dir, a.seed)?;
            eprintln!("data: built-in two-digit addition task, written to {}", dir.display());
            (train, Some(heldout))
        }
    };
    let data = SftDataset::load(&train_path, &tok)?;
    let eval = eval_path.as_ref().map(|p| SftDataset::load(p, &tok)).transpose()?;
    let cfg = SftConfig {
        batch_size: a.batch_size,
        seq_len: a.seq_len,
        grad_accum: a.grad_accum,
        steps: a.steps,
        lr: a.learning_rate,
        min_lr: a.min_lr,
        warmup: a.warmup,
        adamw: AdamWConfig { weight_decay: a.weight_decay, ..AdamWConfig::default() },
        // 0 disables clipping; NaN or a negative value is refused by `SftConfig::validate`
        // rather than read as "off".
        max_grad_norm: (a.max_grad_norm != 0.0).then_some(a.max_grad_norm),
        seed: a.seed,
        save_every: a.save_every,
        output_dir: a.output_dir.clone(),
        grn: GrnConfig { enabled: a.grn, ..GrnConfig::default() },
        save_total_limit: a.save_total_limit.map(|n| n as usize),
    };
    eprintln!(
        "model: {} layers, C={}, V={} ({:.2}M params); data: {} examples, {} tokens from {}",
        model.config().n_layer,
        model.config().n_embd,
        model.config().vocab_size,
        model.num_params() as f64 / 1e6,
        data.examples.len(),
        data.num_tokens(),
        train_path.display()
    );
    let eval_before = match &eval {
        Some(e) => Some(eval_loss(&mut model, e, a.batch_size, a.seq_len, 8, a.seed ^ 0xe7a1)?),
        None => None,
    };
    let bar = indicatif::ProgressBar::new(cfg.steps);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] step {pos}/{len} {msg}")
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    let report = train_sft(&mut model, &tok, &data, &cfg, |p| {
        bar.set_position(p.step);
        bar.set_message(format!("loss {:.4}  lr {:.2e}  {:.0} tok/s", p.loss, p.lr, p.tokens_per_sec));
        if let Some(dir) = &p.checkpoint {
            bar.println(format!("step {}: checkpoint {}", p.step, dir.display()));
        }
    })?;
    bar.finish();
    eprintln!(
        "trained {} steps in {:.1}s ({:.0} tokens/s); final train loss {:.4}",
        cfg.steps,
        report.seconds,
        report.tokens as f64 / report.seconds.max(1e-9),
        report.final_loss
    );
    let final_dir = a.output_dir.join(crate::checkpoint::run_dir::FINAL_DIR);
    save_model(&final_dir, &model, Some(&tok))?;
    if let (Some(e), Some(before)) = (&eval, eval_before) {
        let after = eval_loss(&mut model, e, a.batch_size, a.seq_len, 8, a.seed ^ 0xe7a1)?;
        eprintln!("held-out loss: {before:.4} before, {after:.4} after");
    }
    eprintln!(
        "log: {}; final model: {}; final checkpoint: {}",
        a.output_dir.join("sft_log.jsonl").display(),
        final_dir.display(),
        report.checkpoints.last().map(|p| p.display().to_string()).unwrap_or_default()
    );
    Ok(())
}

//! `dapo generate`: sample completions from a local checkpoint and print them as JSON lines,
//! one per completion: `{"prompt", "completion", "tokens", "finish", "logprob_sum"}`.
//!
//! Sequences are generated in chunks of [`CHUNK`]; sequence `g` (prompt `g / num_samples`,
//! sample `g % num_samples`) draws its tokens with the key `(seed, g / CHUNK)` at index
//! `g % CHUNK`, so the output is a pure function of the prompts, the flags and the seed.

use std::io::Write;
use std::path::PathBuf;

use serde_json::json;

use super::device::on_backend;
use super::device::ComputeArgs;
use super::model_arg::{check_model_dir, load_checkpoint};
use crate::backend::Backend;
use crate::checkpoint::EndTokens;
use crate::data::TaskDataset;
use crate::error::{Error, Result};
use crate::rollout::scored::scored_text;
use crate::rollout::{generate, Completion, FinishReason, RolloutKey, SamplingConfig};
use crate::tokenizer::Tokenizer;

/// Sequences per `generate` call: bounds the KV cache on long prompt files.
const CHUNK: usize = 64;

/// Arguments of `dapo generate`.
#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// Checkpoint: a local transformers GPT-2 directory (config.json, model.safetensors,
    /// tokenizer.json), e.g. runs/sft/checkpoint-1000. Nothing is downloaded.
    #[arg(long)]
    model: PathBuf,
    /// The tokenizer, when not the checkpoint's own: a tokenizer.json, or a directory with one
    /// (or with GPT-2's vocab.json + merges.txt).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// A prompt to continue (repeat the flag for several).
    #[arg(long, required_unless_present = "prompts", conflicts_with = "prompts")]
    prompt: Vec<String>,
    /// A JSONL file of prompts, one {"prompt": ...} a line (other fields are ignored).
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// Most tokens generated per completion (the stop token included).
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy decoding (then --top-k and --top-p do nothing).
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// Sample from the k most likely tokens only (0: no limit).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Nucleus sampling: the smallest set of tokens holding this much probability (1: off).
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Completions per prompt.
    #[arg(long, default_value_t = 1)]
    num_samples: usize,
    /// Stop a completion once its text contains this string (repeatable); the printed
    /// completion is cut before it. Generation always stops at the model's end tokens
    /// (generation_config.json / config.json `eos_token_id`, the tokenizer's `eos_token`).
    #[arg(long)]
    stop: Vec<String>,
    /// Seed of the sampler: the same seed and flags give the same completions.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    compute: ComputeArgs,
}

/// The most completions one `dapo generate` produces (2^24): more is a mistake, and the
/// bookkeeping for them would be allocated before the first one is generated.
const MAX_SEQUENCES: usize = 1 << 24;

/// The JSON name of a finish reason (the API's snake_case, not the Rust variant).
pub(super) fn finish_name(f: FinishReason) -> &'static str {
    match f {
        FinishReason::StopToken => "stop_token",
        FinishReason::StopString => "stop_string",
        FinishReason::Length => "length",
    }
}

/// The completion's text: as a scorer sees it ([`scored_text`]: the end token left out), and
/// cut before the first stop string.
pub(super) fn completion_text(tok: &Tokenizer, c: &Completion, ends: &[u32], stops: &[String]) -> Result<String> {
    let mut text = scored_text(tok, c, ends)?;
    if c.finish == FinishReason::StopString {
        if let Some(cut) = stops.iter().filter_map(|s| text.find(s.as_str())).min() {
            text.truncate(cut);
        }
    }
    Ok(text)
}

/// The end tokens of the model directory `dir` (see [`EndTokens`]), with its notes on stderr.
pub(super) fn end_tokens(dir: &std::path::Path, cfg: &crate::model::Gpt2Config, tok: &Tokenizer) -> Result<Vec<u32>> {
    let e = EndTokens::of_dir(dir, cfg, tok, &[])?;
    for n in &e.notes {
        eprintln!("warning: {n}");
    }
    if !e.sources.is_empty() {
        eprintln!("end tokens: {}", e.sources.join(", "));
    }
    Ok(e.ids)
}

/// Runs `dapo generate`.
pub fn run(a: GenerateArgs) -> Result<()> {
    check_model_dir(&a.model)?;
    if a.num_samples == 0 {
        return Err(Error::Invalid("--num-samples must be at least 1".into()));
    }
    if a.num_samples > MAX_SEQUENCES {
        return Err(Error::Invalid(format!("--num-samples {} exceeds the limit of {MAX_SEQUENCES}", a.num_samples)));
    }
    let texts: Vec<String> = match &a.prompts {
        Some(p) => TaskDataset::load(p, false)?.tasks.into_iter().map(|t| t.prompt).collect(),
        None => a.prompt.clone(),
    };
    if texts.len().checked_mul(a.num_samples).map_or(true, |n| n > MAX_SEQUENCES) {
        return Err(Error::Invalid(format!(
            "{} prompts × --num-samples {} exceeds the limit of {MAX_SEQUENCES} completions per run",
            texts.len(),
            a.num_samples
        )));
    }
    if let Some((i, e)) =
        texts.iter().enumerate().find_map(|(i, t)| crate::data::check_line_length(t).err().map(|e| (i, e)))
    {
        return Err(Error::Invalid(format!("prompt {i}: {e}")));
    }
    if let Some(i) = texts.iter().position(String::is_empty) {
        return Err(Error::Invalid(format!("prompt {i} is empty: the model needs at least one token to continue")));
    }
    let resolved = a.compute.resolve()?;
    on_backend!(resolved, k => generate_on(k, &a, &texts))
}

/// The rest of `dapo generate`, on the backend `--device` resolved to.
fn generate_on<K: Backend>(k: K, a: &GenerateArgs, texts: &[String]) -> Result<()> {
    let (mut model, tok) = load_checkpoint(&a.model, a.tokenizer.as_deref(), k)?;
    let ends = end_tokens(&a.model, model.config(), &tok)?;
    let cfg = SamplingConfig {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        max_new_tokens: a.max_new_tokens,
        stop_token_ids: ends.clone(),
        stop_strings: a.stop.clone(),
    };
    cfg.validate()?;
    let encoded: Vec<Vec<u32>> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| tok.encode(t).map_err(|e| Error::Invalid(format!("prompt {i} ({t:?}): {e}"))))
        .collect::<Result<_>>()?;
    // Sequence g is sample g % num_samples of prompt g / num_samples.
    let seqs: Vec<usize> = (0..texts.len() * a.num_samples).map(|g| g / a.num_samples).collect();
    let decode = |ids: &[u32]| tok.decode(ids).unwrap_or_default();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (chunk, owners) in seqs.chunks(CHUNK).enumerate() {
        let prompts: Vec<Vec<u32>> = owners.iter().map(|&p| encoded[p].clone()).collect();
        let key = RolloutKey { seed: a.seed, step: chunk as u64 };
        let completions = generate(&mut model, &prompts, &cfg, key, Some(&decode))?;
        for c in &completions {
            let line = json!({
                "prompt": texts[owners[c.prompt_index]],
                "completion": completion_text(&tok, c, &ends, &cfg.stop_strings)?,
                "tokens": c.tokens.len(),
                "finish": finish_name(c.finish),
                "logprob_sum": c.logprobs.iter().map(|&x| f64::from(x)).sum::<f64>(),
            });
            match writeln!(out, "{line}") {
                // A closed pipe (`| head`) means the reader has what it wants.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                r => r.map_err(|e| Error::io("<stdout>", e))?,
            }
        }
    }
    match out.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::io("<stdout>", e)),
        _ => Ok(()),
    }
}

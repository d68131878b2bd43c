//! `dapo eval`: greedy completions of a task file's prompts from a local checkpoint, scored
//! like `dapo train` scores its held-out split (the built-in math scorer, or an external
//! command), with the accuracy (mean `correctness`) and the mean of every metric printed, and
//! optionally every task's completion and metrics written as JSONL.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use serde_json::json;

use super::device::on_backend;
use super::device::ComputeArgs;
use super::generate::finish_name;
use super::model_arg::{check_model_dir, load_checkpoint};
use crate::backend::Backend;
use crate::data::{Task, TaskDataset};
use crate::error::{Error, Result};
use crate::reward::{ExternalScorer, FeedbackMapping, MathScorer, RewardMixer, Scorer};
use crate::rollout::scored::{ScoredCompletions, ScoredGeneration, EVAL_CHUNK};
use crate::rollout::{RolloutKey, SamplingConfig};

/// Arguments of `dapo eval`.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// Checkpoint: a local transformers GPT-2 directory (config.json, model.safetensors,
    /// tokenizer.json). Nothing is downloaded.
    #[arg(long)]
    model: PathBuf,
    /// The tokenizer, when not the checkpoint's own: a tokenizer.json, or a directory with one
    /// (or with GPT-2's vocab.json + merges.txt).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Task file: JSONL, one {"prompt", "answer", "task_id"} a line (the format of `dapo train`).
    #[arg(long)]
    dataset: PathBuf,
    /// Evaluate only the first N tasks (default: all).
    #[arg(long)]
    limit: Option<usize>,
    /// Most tokens generated per completion; decoding also stops at the model's end tokens
    /// (its eos ids, else <|endoftext|>).
    #[arg(long, default_value_t = 16)]
    max_new_tokens: usize,
    /// Also report the mean mixed reward under these mixer weights (YAML, JSON or TOML); the
    /// whole evaluation is mixed as one group.
    #[arg(long)]
    reward_mixer: Option<PathBuf>,
    /// An external scorer: a command that reads JSONL requests on stdin and prints one JSON
    /// reward dict per completion (docs/external_scorer.md). It sees each completion as in
    /// `dapo train`, without the end token it stopped at. Default: the built-in math scorer.
    #[arg(long)]
    scorer_cmd: Option<String>,
    #[command(flatten)]
    compute: ComputeArgs,
    /// Write one JSON line per task: prompt, answer, completion, finish, tokens, metrics (and
    /// reward with --reward-mixer).
    #[arg(long)]
    output: Option<PathBuf>,
}

/// Runs `dapo eval`.
pub fn run(a: EvalArgs) -> Result<()> {
    check_model_dir(&a.model)?;
    let mut data = TaskDataset::load(&a.dataset, false)?;
    if let Some(n) = a.limit {
        if n == 0 {
            return Err(Error::Invalid("--limit must be at least 1".into()));
        }
        data.tasks.truncate(n);
    }
    let scorer: Box<dyn Scorer> = match &a.scorer_cmd {
        Some(c) => Box::new(ExternalScorer::from_command_line(c)?),
        None => Box::new(MathScorer),
    };
    let mixer = a.reward_mixer.as_ref().map(RewardMixer::from_file).transpose()?;
    // A weight no metric can satisfy is reported before any generation, as `dapo train` does.
    if let (Some(m), Some(names)) = (&mixer, scorer.metric_names()) {
        m.check_keys(names.iter().map(String::as_str))?;
    }
    let resolved = a.compute.resolve()?;
    on_backend!(resolved, k => eval_on(k, &a, data, scorer, mixer))
}

/// The rest of `dapo eval`, on the backend `--device` resolved to.
fn eval_on<K: Backend>(
    k: K,
    a: &EvalArgs,
    data: TaskDataset,
    mut scorer: Box<dyn Scorer>,
    mut mixer: Option<RewardMixer>,
) -> Result<()> {
    let (mut model, tok) = load_checkpoint(&a.model, a.tokenizer.as_deref(), k)?;
    let ends = super::generate::end_tokens(&a.model, model.config(), &tok)?;
    let cfg = SamplingConfig {
        temperature: 0.0,
        max_new_tokens: a.max_new_tokens,
        stop_token_ids: ends,
        ..SamplingConfig::default()
    };
    cfg.validate()?;
    let prompts: Vec<Vec<u32>> = data
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| tok.encode(&t.prompt).map_err(|e| Error::Invalid(format!("task {i} ({:?}): {e}", t.prompt))))
        .collect::<Result<_>>()?;

    let tasks: Vec<&Task> = data.tasks.iter().collect();
    let start = Instant::now();
    // Scored as `dapo train` scores its held-out split, so the numbers match its accuracy.
    // Greedy decoding draws no random numbers; the key only satisfies the signature.
    let generation =
        ScoredGeneration { tok: &tok, sampling: &cfg, key: RolloutKey { seed: 0, step: 0 }, chunk: EVAL_CHUNK };
    let ScoredCompletions { completions, texts: scored, metrics, .. } =
        generation.run(&mut model, scorer.as_mut(), &prompts, &tasks)?;
    let secs = start.elapsed().as_secs_f64();

    let rewards = match mixer.as_mut() {
        Some(m) => {
            let mapping = FeedbackMapping::identity();
            let feedback = metrics
                .iter()
                .zip(&data.tasks)
                .enumerate()
                .map(|(i, (m, t))| mapping.apply(m, &t.task_id, i as u64, 0))
                .collect::<Result<Vec<_>>>()?;
            Some(m.mix(&feedback, &[feedback.len()])?.0)
        }
        None => None,
    };

    if let Some(path) = &a.output {
        let mut f = std::io::BufWriter::new(std::fs::File::create(path).map_err(|e| Error::io(path, e))?);
        for (i, ((task, c), m)) in data.tasks.iter().zip(&completions).zip(&metrics).enumerate() {
            let mut line = json!({
                "index": i,
                "prompt": task.prompt,
                "answer": task.record.get("answer"),
                "completion": scored[i],
                "finish": finish_name(c.finish),
                "tokens": c.tokens.len(),
                "metrics": m,
            });
            if let Some(r) = &rewards {
                line["reward"] = json!(r[i]);
            }
            writeln!(f, "{line}").map_err(|e| Error::io(path, e))?;
        }
        f.flush().map_err(|e| Error::io(path, e))?;
    }

    // Means over the completions that report each metric (an external scorer may omit some).
    let mut sums: BTreeMap<&str, (f64, usize)> = BTreeMap::new();
    for m in &metrics {
        for (key, v) in m {
            let e = sums.entry(key.as_str()).or_default();
            e.0 += v;
            e.1 += 1;
        }
    }
    let n = data.tasks.len();
    let tokens: usize = completions.iter().map(|c| c.tokens.len()).sum();
    eprintln!(
        "eval: {n} tasks of {} with {} in {secs:.2}s ({:.0} generated tokens/s)",
        a.dataset.display(),
        a.model.display(),
        tokens as f64 / secs.max(1e-9)
    );
    match sums.get("correctness") {
        Some(&(s, c)) => outln!("accuracy={:.4} n={n}", s / c as f64),
        None => outln!("accuracy=n/a n={n} (the scorer reports no `correctness`)"),
    }
    for (key, (s, c)) in &sums {
        outln!("mean {key}={:.4}", s / *c as f64);
    }
    if let Some(r) = &rewards {
        outln!("mean reward={:.4}", r.iter().sum::<f64>() / r.len().max(1) as f64);
    }
    if let Some(p) = &a.output {
        eprintln!("per-task results: {}", p.display());
    }
    Ok(())
}

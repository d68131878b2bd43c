//! The GPT-2 workloads of `dapo bench` on random weights: training throughput (with MFU and
//! peak memory), rollout decoding, and one DAPO step split into its phases.

use std::time::Instant;

use super::{median, BenchArgs, Part};
use crate::backend::Backend;
use crate::data::{Task, TaskDataset};
use crate::error::{Error, Result};
use crate::model::{Gpt2, Gpt2Config};
use crate::optim::{AdamW, AdamWConfig};
use crate::reward::{FeedbackMapping, FnScorer, Metrics, RewardMixer, ScoreInput};
use crate::rollout::{generate, RolloutKey, SamplingConfig};
use crate::tokenizer::Tokenizer;
use crate::train::dapo::DapoTrainer;
use crate::train::dapo_config::DapoConfig;
use crate::util::rng::Rng;

/// The GPT-2 workloads of `dapo bench` and their sizes: the CPU's (comparable with
/// `bench/torch_cpu_gpt2.py`), the GPU's (those of issue 6 and `bench/torch_gpt2_gpu.py`), and
/// tiny ones that run on the emulator.
pub(super) struct Workloads {
    model: String,
    vocab: usize,
    /// Training batch: B sequences of T tokens.
    b: usize,
    t: usize,
    /// Also time forward+backward and forward alone (the CPU comparison with PyTorch).
    fwd_bwd: bool,
    /// Decoding: prompts × prompt tokens, new tokens each; greedy or sampled at T=1.
    decode: (usize, usize, usize),
    decode_greedy: bool,
    /// One RL step: prompts × completions × new tokens, prompt tokens.
    rl: (usize, usize, usize, usize),
    /// Untimed RL steps before the timed one (allocations, module loads).
    rl_warmup: usize,
    micro_batch: usize,
    /// MFU's denominator, FLOP/s (none on the CPU).
    peak_flops: Option<f64>,
    /// Timed training steps (after `warmup` untimed ones) and decode runs (after one).
    iters: usize,
    decode_iters: usize,
    warmup: usize,
    /// The workloads to run (`--only`); empty: all of them.
    only: Vec<Part>,
}

impl Workloads {
    /// Whether `--only` leaves workload `p` in.
    fn runs(&self, p: Part) -> bool {
        self.only.is_empty() || self.only.contains(&p)
    }

    pub(super) fn cpu(a: &BenchArgs) -> Self {
        Workloads {
            model: a.model.clone(),
            vocab: 50257,
            b: a.batch_size.unwrap_or(4),
            t: a.seq_len.unwrap_or(256),
            fwd_bwd: true,
            decode: (8, 16, 32),
            decode_greedy: !a.decode_sample,
            rl: (4, 4, 16, 16),
            // One untimed step first: the first step allocates every buffer and warms the
            // caches (9.1 s cold against ~5.5 s warm at 124M), and TRL's step is timed warm.
            rl_warmup: 1,
            micro_batch: a.rl_micro_batch.unwrap_or(0),
            peak_flops: None,
            iters: a.iters.unwrap_or(5).max(1),
            decode_iters: a.iters.unwrap_or(2).max(1),
            warmup: 2,
            only: a.only.clone(),
        }
        .or_small(a.small)
    }

    pub(super) fn gpu(a: &BenchArgs) -> Self {
        Workloads {
            model: a.model.clone(),
            vocab: 50257,
            b: a.batch_size.unwrap_or(16),
            t: a.seq_len.unwrap_or(1024),
            fwd_bwd: false,
            decode: (256, 16, 256),
            decode_greedy: false,
            rl: (64, 8, 128, 16),
            rl_warmup: 1,
            micro_batch: a.rl_micro_batch.unwrap_or(128),
            peak_flops: Some(a.peak_tflops.unwrap_or_else(|| super::peak_tflops(a.precision.choice().on_gpu())) * 1e12),
            iters: a.iters.unwrap_or(5).max(1),
            decode_iters: a.iters.unwrap_or(2).max(1),
            warmup: 2,
            only: a.only.clone(),
        }
        .or_small(a.small)
    }

    /// `--full-size` on the emulator: the training step and one RL step of `--model` (GPT-2
    /// 124M by default) at B×T = `--batch-size`×`--seq-len` (default 1×128) and an RL step of
    /// 4 prompts × 4 completions × 32 tokens, once each, for the peak device bytes the
    /// emulator's meter counts: what a GPU holds for those shapes (buffers, not the CUDA
    /// context or cuBLASLt's workspace). No decode; slow (minutes at 124M).
    pub(super) fn emulated_full_size(a: &BenchArgs) -> Self {
        Workloads {
            model: a.model.clone(),
            vocab: 50257,
            b: a.batch_size.unwrap_or(1),
            t: a.seq_len.unwrap_or(128),
            fwd_bwd: false,
            decode: (1, 1, 1),
            decode_greedy: true,
            rl: (4, 4, 32, 16),
            rl_warmup: 0,
            micro_batch: a.rl_micro_batch.unwrap_or(0),
            peak_flops: None,
            iters: 1,
            decode_iters: 1,
            warmup: 0,
            only: if a.only.is_empty() { vec![Part::Train, Part::RlStep] } else { a.only.clone() },
        }
    }

    /// The tiny shapes (`--small`, and on the emulator unless `--full-size`).
    pub(super) fn small() -> Self {
        Workloads {
            model: "tiny".into(),
            vocab: 512,
            b: 2,
            t: 16,
            fwd_bwd: false,
            decode: (4, 4, 4),
            decode_greedy: false,
            rl: (2, 2, 4, 4),
            rl_warmup: 1,
            micro_batch: 0,
            peak_flops: None,
            iters: 1,
            decode_iters: 1,
            warmup: 1,
            only: Vec::new(),
        }
    }

    fn or_small(self, small: bool) -> Self {
        if small {
            Workloads {
                peak_flops: self.peak_flops,
                iters: self.iters,
                decode_iters: self.decode_iters,
                only: self.only,
                ..Self::small()
            }
        } else {
            self
        }
    }
}

/// "peak_MiB=…" of the backend's buffers since the last reset, or "n/a" where untracked.
fn peak_mib<K: Backend>(k: &K) -> String {
    k.memory().map_or_else(|| "n/a".to_string(), |m| format!("{:.0}", m.peak as f64 / (1 << 20) as f64))
}

/// Seconds of `run`, measured from a synchronised start to a synchronised end.
fn seconds<K: Backend, T>(k: &K, run: impl FnOnce() -> Result<T>) -> Result<(f64, T)> {
    k.synchronize();
    let start = Instant::now();
    let out = run()?;
    k.synchronize();
    Ok((start.elapsed().as_secs_f64(), out))
}

/// What one timed training-throughput iteration runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    Forward,
    ForwardBackward,
    /// Forward, backward and the AdamW update.
    TrainStep,
}

/// Training throughput (one step = forward + backward + AdamW on B×T random tokens), then
/// decoding and one RL step, on backend `k`.
pub(super) fn model_bench<K: Backend>(k: K, w: &Workloads, skip_rl: bool) -> Result<()> {
    let cfg = Gpt2Config::named(&w.model, w.vocab)?;
    let (b, t) = (w.b, w.t);
    if t > cfg.n_positions {
        return Err(Error::Invalid(format!("--seq-len {t} exceeds {}'s n_positions {}", w.model, cfg.n_positions)));
    }
    if b == 0 || t == 0 || w.iters == 0 {
        return Err(Error::Invalid("--batch-size, --seq-len and --iters must be at least 1".into()));
    }
    {
        use crate::model::memory::{activation_bytes, training_state_bytes};
        let need = training_state_bytes(&cfg, 0) + activation_bytes(&cfg, b as u128 * t as u128);
        crate::util::mem::ensure_fits(
            need,
            k.available_memory(),
            &format!("the {} training step of {b} × {t} tokens", w.model),
            "--batch-size or --seq-len",
        )?;
    }
    let n = crate::model::memory::param_count(&cfg) as usize;
    outln!(
        "dapo  {}  model={} ({:.1}M params, V={})  backend={}",
        env!("CARGO_PKG_VERSION"),
        w.model,
        n as f64 / 1e6,
        cfg.vocab_size,
        k.name()
    );
    if !(w.fwd_bwd && w.runs(Part::FwdBwd) || w.runs(Part::Train) || w.runs(Part::Decode)) {
        // `--only rl-step`: the step builds its own model, so the process's peak memory is the
        // step's alone.
        return if skip_rl { Ok(()) } else { rl_step_bench(k, cfg, w) };
    }
    let mut model = Gpt2::random(k.clone(), cfg.clone(), 1)?;
    debug_assert_eq!(model.num_params(), n);
    let mut rng = Rng::new(2);
    let ids: Vec<u32> = (0..b * t).map(|_| rng.below(cfg.vocab_size) as u32).collect();
    let targets: Vec<u32> = (0..b * t).map(|_| rng.below(cfg.vocab_size) as u32).collect();
    let weights = vec![1.0 / (b * t) as f32; b * t];
    let (iters, warmup) = (w.iters, w.warmup);
    let mut opt = AdamW::new(&model, AdamWConfig::default());
    let mut time = |what: Pass, model: &mut Gpt2<K>| -> Result<f64> {
        let mut secs = Vec::with_capacity(iters);
        for i in 0..iters + warmup {
            let (s, _) = seconds(&k, || {
                if what == Pass::Forward {
                    return model.forward(&ids, b, t);
                }
                model.zero_grad();
                model.forward_backward(&ids, &targets, &weights, b, t)?;
                if what == Pass::TrainStep {
                    opt.step(model, 3e-4, Some(1.0))?;
                }
                Ok(())
            })?;
            if i >= warmup {
                secs.push(s);
            }
        }
        Ok(median(secs))
    };
    if w.fwd_bwd && w.runs(Part::FwdBwd) {
        let fb = time(Pass::ForwardBackward, &mut model)?;
        outln!("dapo   fwd+bwd  B={b} T={t}  median_s={fb:.3}  tokens/s={:.1}", (b * t) as f64 / fb);
        let f = time(Pass::Forward, &mut model)?;
        outln!("dapo   fwd      B={b} T={t}  median_s={f:.3}  tokens/s={:.1}", (b * t) as f64 / f);
    }
    if w.runs(Part::Train) {
        k.reset_peak_memory();
        let step = time(Pass::TrainStep, &mut model)?;
        let tps = (b * t) as f64 / step;
        // llm.c's estimate: 6 FLOPs per parameter per token (forward 2, backward 4) plus the
        // attention scores and their use, 6·layers·T·C per token (bench/torch_gpt2_gpu.py uses
        // the same formula).
        let flops_per_token = 6.0 * n as f64 + 6.0 * (cfg.n_layer * t * cfg.n_embd) as f64;
        let mfu = w.peak_flops.map_or_else(|| "n/a".into(), |p| format!("{:.1}%", 100.0 * flops_per_token * tps / p));
        outln!(
            "dapo   train    B={b} T={t}  median_ms={:.2}  tokens/s={tps:.0}  MFU={mfu}  peak_MiB={}",
            1e3 * step,
            peak_mib(&k)
        );
    }
    drop(opt);
    if w.runs(Part::Decode) {
        decode_bench(&mut model, w)?;
    }
    // The step builds its own policy, reference and optimizer state: free this one first.
    drop(model);
    if !skip_rl && w.runs(Part::RlStep) {
        rl_step_bench(k, cfg, w)?;
    }
    Ok(())
}

/// Rollout throughput: `rollout::generate` of `new` tokens on random prompts, the prefill
/// included, every sequence running to `new` tokens (no stop tokens), and the decode steps
/// alone (generate minus a timed prefill).
fn decode_bench<K: Backend>(model: &mut Gpt2<K>, w: &Workloads) -> Result<()> {
    let (b, p, new) = w.decode;
    let iters = w.decode_iters;
    let v = model.config().vocab_size;
    let k = model.backend().clone();
    let mut rng = Rng::new(4);
    let prompts: Vec<Vec<u32>> = (0..b).map(|_| (0..p).map(|_| rng.below(v) as u32).collect()).collect();
    let temperature = if w.decode_greedy { 0.0 } else { 1.0 };
    let cfg = SamplingConfig { temperature, max_new_tokens: new, ..SamplingConfig::default() };
    let (mut gen, mut pre) = (Vec::with_capacity(iters), Vec::with_capacity(iters));
    k.reset_peak_memory();
    for i in 0..iters + 1 {
        let key = RolloutKey { seed: 0, step: i as u64 };
        let (g, out) = seconds(&k, || generate(model, &prompts, &cfg, key, None))?;
        debug_assert!(out.iter().all(|c| c.tokens.len() == new));
        drop(out);
        let (pf, _) = seconds(&k, || {
            let mut cache = model.kv_cache(b, p + new - 1)?;
            model.prefill_in_cache(&mut cache, &prompts)
        })?;
        // The first warm-up run allocates the scratch buffers; it is not timed.
        if i >= 1 {
            pre.push(pf);
            gen.push(g);
        }
    }
    let (g, pf) = (median(gen), median(pre));
    // The first token comes from the prefill's logits; the other new−1 need a decode step each.
    let decode_only = (b * (new - 1)) as f64 / (g - pf).max(1e-9);
    outln!(
        "dapo   decode   B={b} prompt={p} new={new} {}  median_s={g:.3}  tokens/s={:.1}  prefill_s={pf:.3}  \
         decode_only_tokens/s={decode_only:.1}  peak_MiB={}",
        if w.decode_greedy { "greedy" } else { "T=1" },
        (b * new) as f64 / g,
        peak_mib(&k)
    );
    Ok(())
}

/// One DAPO step with its phases from `StepRecord.timing` and the peak memory of the step:
/// prompts × completions × new tokens at temperature 1, β = 0.04 so the reference pass runs.
/// The tokenizer is a character-level one covering the whole vocabulary, so that every
/// sampled id decodes; the reward is a hash of the completion's text, so groups differ and the
/// advantages are non-zero; no stop token, so every completion has `new` tokens.
fn rl_step_bench<K: Backend>(k: K, cfg: Gpt2Config, w: &Workloads) -> Result<()> {
    let (prompts, group, new, prompt_len) = w.rl;
    let v = cfg.vocab_size;
    // v − 1 distinct characters from U+0100 on (id 0 is <|endoftext|>); U+0100 + 50256 stays
    // below the surrogates at U+D800, so every one is a valid `char`.
    let alphabet: String = (0x100u32..).filter_map(char::from_u32).take(v - 1).collect();
    let tok = Tokenizer::char_level(&alphabet)?;
    let chars: Vec<char> = alphabet.chars().collect();
    let mut rng = Rng::new(5);
    let tasks = (0..2 * prompts)
        .map(|_| Task {
            prompt: (0..prompt_len).map(|_| chars[rng.below(chars.len())]).collect(),
            task_id: "bench".into(),
            record: serde_json::Value::Null,
        })
        .collect();
    let data = TaskDataset::from_tasks(tasks);
    let scorer = FnScorer::new("bench_hash", |x: &ScoreInput<'_>| {
        let h = x.completion.chars().fold(0u64, |h, c| h.wrapping_mul(31).wrapping_add(u64::from(c)));
        Ok(Metrics::from([("score".to_string(), (h % 5) as f64 / 4.0)]))
    })
    .with_metric_names(["score"]);
    let mut dcfg = DapoConfig {
        steps: 1,
        batch_size: prompts,
        group_size: group,
        learning_rate: 1e-5,
        micro_batch_size: w.micro_batch,
        ..DapoConfig::default()
    };
    dcfg.objective.beta = 0.04;
    dcfg.sampling = SamplingConfig { temperature: 1.0, max_new_tokens: new, ..SamplingConfig::default() };
    let model = Gpt2::random(k.clone(), cfg, 1)?;
    let mixer = RewardMixer::from_weights([("score", 1.0)])?;
    let mut trainer = DapoTrainer::new(model, tok, Box::new(scorer), FeedbackMapping::identity(), mixer, dcfg.clone())?;
    for _ in 0..w.rl_warmup {
        trainer.step(&data)?;
    }
    k.reset_peak_memory();
    let allocs_before = k.memory().map(|m| m.allocations);
    let (total, rec) = seconds(&k, || trainer.step(&data))?;
    // Device allocations the (warm) step made: none once every buffer has reached its size.
    let allocs = match (allocs_before, k.memory()) {
        (Some(a), Some(m)) => (m.allocations - a).to_string(),
        _ => "n/a".to_string(),
    };
    let phase = |name: &str| rec.timing.get(name).and_then(serde_json::Value::as_f64).unwrap_or(f64::NAN);
    let sequences = prompts * group;
    let mb = dcfg.micro_batch(sequences).min(sequences);
    outln!(
        "dapo   rl-step  P={prompts} G={group} new={new} prompt={prompt_len} beta={}  rollout_s={:.3} score_s={:.3} \
         reference_s={:.3} update_s={:.3} total_s={total:.3}  peak_MiB={}  allocs={allocs}  micro_batch={mb}/{sequences}",
        dcfg.objective.beta,
        phase("rollout_s"),
        phase("score_s"),
        phase("reference_s"),
        phase("update_s"),
        peak_mib(&k)
    );
    Ok(())
}

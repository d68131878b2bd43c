//! `dapo bench`: GPT-2 workloads on any backend, then (on a GPU or the emulator) the kernel
//! table.
//!
//! The workloads, on random weights: a training step (forward + backward + AdamW) with its
//! tokens/s, MFU and peak memory; rollout decoding (`rollout::generate`, every sequence running
//! to the full length); and one DAPO step split into rollout / score / reference / update with
//! its peak memory. On the CPU the shapes are those of `bench/torch_cpu_gpt2.py` (B=4, T=256,
//! plus forward+backward and forward alone); on a GPU those of `bench/torch_gpt2_gpu.py`
//! (training B=16, T=1024; decoding 256 prompts × 256 new tokens; the RL step at 64 prompts ×
//! 8 completions × 128 new tokens), printed in the same format so the lines read side by side.
//! The emulator runs tiny shapes: it checks the code path, not speed.
//!
//! The kernel table: each fused kernel's median device time, minimal bytes moved, GB/s and the
//! fraction of a device-to-device copy's bandwidth measured in the same run, on the shapes
//! `bench/torch_reference.py` times PyTorch eager on, plus one GEMM row in TFLOP/s.

use super::device::{resolve, DeviceChoice, Resolved};
use crate::backend::device::Device;
use crate::backend::kernel::KernelBackend;
use crate::backend::prelude::*;
use crate::backend::{policy_metric as pm, Backend, Gemm, GrnShape, LogprobChunk, PolicyLossInputs, PolicyLossParams};
use crate::backend::{AdvantageParams, GrnCausalStats, GrnParams, GroupOffsets};
use crate::data::{Task, TaskDataset};
use crate::error::{Error, Result};
use crate::model::{Gpt2, Gpt2Config};
use crate::optim::{AdamW, AdamWConfig};
use crate::reward::{FeedbackMapping, FnScorer, Metrics, RewardMixer, ScoreInput};
use crate::rl::advantage::AdvantageScaling;
use crate::rollout::{generate, RolloutKey, SamplingConfig};
use crate::tokenizer::Tokenizer;
use crate::train::dapo::DapoTrainer;
use crate::train::dapo_config::DapoConfig;
use crate::util::rng::Rng;
use std::time::Instant;

/// Arguments of `dapo bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Backend to time: cpu, cuda, cuda:N, emu (the kernel emulator), or auto.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    /// CPU worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Model shape: tiny, small, gpt2 (124M) or gpt2-medium.
    #[arg(long, default_value = "gpt2")]
    model: String,
    /// Sequences per training batch (B); default 4 on the CPU, 16 on a GPU.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Tokens per training sequence (T); default 256 on the CPU, 1024 on a GPU.
    #[arg(long)]
    seq_len: Option<usize>,
    /// Timed iterations, the median is reported (default: 5 training steps after 2 warm-ups,
    /// 2 decode runs after 1; 20 per kernel on a GPU, 3 on the emulator). The RL step runs
    /// once after one warm-up step on a GPU.
    #[arg(long)]
    iters: Option<usize>,
    /// Small shapes everywhere (a tiny model; for the emulator, which always uses them).
    #[arg(long)]
    small: bool,
    /// Skip the RL-step breakdown (it builds a trainer with a reference copy and AdamW state:
    /// ~15 s and ~2.5 GB for gpt2 on 2 cores).
    #[arg(long)]
    skip_rl: bool,
    /// GPU: skip the GPT-2 workloads and print only the kernel table.
    #[arg(long)]
    kernels_only: bool,
    /// Sequences per forward/backward pass of the RL step's update (0: the whole batch).
    #[arg(long)]
    rl_micro_batch: Option<usize>,
    /// The device's peak dense TF32 throughput in TFLOP/s, for MFU (H100 SXM: 494.7).
    #[arg(long, default_value_t = 494.7)]
    peak_tflops: f64,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

/// Runs `dapo bench`.
pub fn run(a: BenchArgs) -> Result<()> {
    // `auto` without a usable GPU resolves to the CPU (and says why).
    match resolve(a.device, a.threads)? {
        Resolved::Cpu(k) => model_bench(k, &Workloads::cpu(&a), a.skip_rl),
        Resolved::Cuda(k) => {
            if !a.kernels_only {
                model_bench(k.clone(), &Workloads::gpu(&a), a.skip_rl)?;
            }
            kernel_bench(&k, &a, false)
        }
        Resolved::Emu(k) => {
            if !a.kernels_only {
                model_bench(k.clone(), &Workloads::small(), a.skip_rl)?;
            }
            kernel_bench(&k, &a, true)
        }
    }
}

/// The GPT-2 workloads of `dapo bench` and their sizes: the CPU's (comparable with
/// `bench/torch_cpu_gpt2.py`), the GPU's (those of issue 6 and `bench/torch_gpt2_gpu.py`), and
/// tiny ones that run on the emulator.
struct Workloads {
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
}

impl Workloads {
    fn cpu(a: &BenchArgs) -> Self {
        Workloads {
            model: a.model.clone(),
            vocab: 50257,
            b: a.batch_size.unwrap_or(4),
            t: a.seq_len.unwrap_or(256),
            fwd_bwd: true,
            decode: (8, 16, 32),
            decode_greedy: true,
            rl: (4, 4, 16, 16),
            rl_warmup: 0,
            micro_batch: a.rl_micro_batch.unwrap_or(0),
            peak_flops: None,
            iters: a.iters.unwrap_or(5).max(1),
            decode_iters: a.iters.unwrap_or(2).max(1),
            warmup: 2,
        }
        .or_small(a.small)
    }

    fn gpu(a: &BenchArgs) -> Self {
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
            peak_flops: Some(a.peak_tflops * 1e12),
            iters: a.iters.unwrap_or(5).max(1),
            decode_iters: a.iters.unwrap_or(2).max(1),
            warmup: 2,
        }
        .or_small(a.small)
    }

    /// The tiny shapes (`--small`, and always on the emulator).
    fn small() -> Self {
        Workloads {
            model: "tiny".into(),
            vocab: 512,
            b: 2,
            t: 16,
            fwd_bwd: false,
            decode: (4, 4, 4),
            decode_greedy: false,
            rl: (2, 2, 4, 4),
            rl_warmup: 0,
            micro_batch: 0,
            peak_flops: None,
            iters: 1,
            decode_iters: 1,
            warmup: 1,
        }
    }

    fn or_small(self, small: bool) -> Self {
        if small {
            Workloads {
                peak_flops: self.peak_flops,
                iters: self.iters,
                decode_iters: self.decode_iters,
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
fn model_bench<K: Backend>(k: K, w: &Workloads, skip_rl: bool) -> Result<()> {
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
    let mut model = Gpt2::random(k.clone(), cfg.clone(), 1)?;
    let mut rng = Rng::new(2);
    let ids: Vec<u32> = (0..b * t).map(|_| rng.below(cfg.vocab_size) as u32).collect();
    let targets: Vec<u32> = (0..b * t).map(|_| rng.below(cfg.vocab_size) as u32).collect();
    let weights = vec![1.0 / (b * t) as f32; b * t];
    let n = model.num_params();
    outln!(
        "dapo  {}  model={} ({:.1}M params, V={})  backend={}",
        env!("CARGO_PKG_VERSION"),
        w.model,
        n as f64 / 1e6,
        cfg.vocab_size,
        k.name()
    );
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
    if w.fwd_bwd {
        let fb = time(Pass::ForwardBackward, &mut model)?;
        outln!("dapo   fwd+bwd  B={b} T={t}  median_s={fb:.3}  tokens/s={:.1}", (b * t) as f64 / fb);
        let f = time(Pass::Forward, &mut model)?;
        outln!("dapo   fwd      B={b} T={t}  median_s={f:.3}  tokens/s={:.1}", (b * t) as f64 / f);
    }
    k.reset_peak_memory();
    let step = time(Pass::TrainStep, &mut model)?;
    let tps = (b * t) as f64 / step;
    // llm.c's estimate: 6 FLOPs per parameter per token (forward 2, backward 4) plus the
    // attention scores and their use, 6·layers·T·C per token (bench/torch_gpt2_gpu.py uses the
    // same formula).
    let flops_per_token = 6.0 * n as f64 + 6.0 * (cfg.n_layer * t * cfg.n_embd) as f64;
    let mfu = w.peak_flops.map_or_else(|| "n/a".into(), |p| format!("{:.1}%", 100.0 * flops_per_token * tps / p));
    outln!(
        "dapo   train    B={b} T={t}  median_ms={:.2}  tokens/s={tps:.0}  MFU={mfu}  peak_MiB={}",
        1e3 * step,
        peak_mib(&k)
    );
    drop(opt);
    decode_bench(&mut model, w)?;
    // The step builds its own policy, reference and optimizer state: free this one first.
    drop(model);
    if !skip_rl {
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
    let (total, rec) = seconds(&k, || trainer.step(&data))?;
    let phase = |name: &str| rec.timing.get(name).and_then(serde_json::Value::as_f64).unwrap_or(f64::NAN);
    let sequences = prompts * group;
    let mb = dcfg.micro_batch(sequences).min(sequences);
    outln!(
        "dapo   rl-step  P={prompts} G={group} new={new} prompt={prompt_len} beta={}  rollout_s={:.3} score_s={:.3} \
         reference_s={:.3} update_s={:.3} total_s={total:.3}  peak_MiB={}  micro_batch={mb}/{sequences}",
        dcfg.objective.beta,
        phase("rollout_s"),
        phase("score_s"),
        phase("reference_s"),
        phase("update_s"),
        peak_mib(&k)
    );
    Ok(())
}

// ---- the kernel table ----------------------------------------------------------------------------

/// The shapes of the kernel table (the full set matches `bench/torch_reference.py`).
struct Shapes {
    /// logprob: rows N and vocabulary V.
    n: usize,
    v: usize,
    /// advantage: rewards and completions per group.
    adv_n: usize,
    adv_group: usize,
    /// policy loss: sequences S, tokens per sequence L.
    s: usize,
    l: usize,
    /// GRN: B, T, C.
    b: usize,
    t: usize,
    c: usize,
    /// GEMM (m, n, k): GPT-2's attention projection, (B·T, 3C) = (B·T, C)·(C, 3C).
    mm: (usize, usize, usize),
    /// Words of the device-to-device copy.
    copy_words: usize,
}

impl Shapes {
    fn new(small: bool) -> Self {
        if small {
            Shapes {
                n: 8,
                v: 1000,
                adv_n: 64,
                adv_group: 8,
                s: 4,
                l: 16,
                b: 2,
                t: 8,
                c: 64,
                mm: (64, 192, 64),
                copy_words: 1 << 18,
            }
        } else {
            Shapes {
                n: 16384,
                v: 50257,
                adv_n: 16384,
                adv_group: 8,
                s: 128,
                l: 128,
                b: 16,
                t: 1024,
                c: 768,
                mm: (16 * 1024, 3 * 768, 768),
                copy_words: 1 << 28,
            }
        }
    }
}

/// Inputs smaller than this are rotated among copies so the 50 MB L2 of an H100 cannot hold
/// them between timed runs (as `bench/torch_reference.py` does).
const ROTATE_BELOW: usize = 64 << 20;
/// The rotated copies of one op's inputs span at least this many bytes.
const ROTATE_FOOTPRINT: usize = 256 << 20;

/// How many input sets to rotate through for inputs of `bytes`, given `runs` timed + warm-up
/// runs (no more sets than runs: each run touches one).
fn copies(bytes: usize, runs: usize, emulated: bool) -> usize {
    if emulated || bytes >= ROTATE_BELOW {
        1
    } else {
        ROTATE_FOOTPRINT.div_ceil(bytes.max(1)).clamp(1, runs)
    }
}

/// One line of the table.
struct Row {
    op: &'static str,
    shape: String,
    ms: f64,
    bytes: f64,
    note: String,
}

/// A device buffer of `len` random values N(0, std²) (never zeros). Large buffers repeat a
/// random block of at most 16 Mi values, copied on the device, so no host vector of their size
/// is built (the (N, V) logits are 3.3 GB).
fn random_buf<D: Device>(
    k: &KernelBackend<D>,
    rng: &mut Rng,
    len: usize,
    std: f32,
) -> <KernelBackend<D> as MemoryOps>::Buf {
    let block = len.min(1 << 24);
    let host: Vec<f32> = (0..block).map(|_| rng.normal() * std).collect();
    if block == len {
        return k.upload(&host);
    }
    let mut buf = k.alloc(len);
    let src = k.upload(&host);
    let mut off = 0;
    while off < len {
        let w = block.min(len - off);
        k.copy_range(&mut buf, off, &src, 0, w);
        off += w;
    }
    buf
}

/// Median device time of `f(i)` in ms over `runs` timed runs after `warmup` runs; `i` counts
/// the runs, for rotating input sets.
fn time_op<D: Device>(k: &KernelBackend<D>, warmup: usize, runs: usize, f: &mut dyn FnMut(usize)) -> Result<f64> {
    let mut ms = Vec::with_capacity(runs);
    for i in 0..warmup + runs {
        let t = k
            .device()
            .time_ms(&mut || {
                f(i);
                Ok(())
            })
            .map_err(|e| Error::Invalid(format!("bench: timing on {} failed: {e}", k.device().describe())))?;
        if i >= warmup {
            ms.push(t);
        }
    }
    Ok(median(ms))
}

fn kernel_bench<D: Device>(k: &KernelBackend<D>, a: &BenchArgs, emulated: bool) -> Result<()> {
    // The emulator runs every CUDA thread on one host core: the full shapes would take hours there.
    let sh = Shapes::new(a.small || emulated);
    let (warmup, runs) = if emulated { (1, a.iters.unwrap_or(3).max(1)) } else { (3, a.iters.unwrap_or(20).max(1)) };
    outln!("dapo  {}  kernel table  device={}", env!("CARGO_PKG_VERSION"), k.device().describe());
    if emulated && !a.small {
        outln!("note: emulated device: using the --small shapes");
    }
    if emulated {
        outln!("note: emulated device: the times are host times of the emulated kernels (each block's CUDA threads as fibers on one host thread), not GPU times");
    }
    outln!("method: device time (Device::time_ms) of each op, {warmup} warm-up + {runs} timed runs, median; random inputs; small inputs rotated past L2");
    let mut rng = Rng::new(3);
    let f32b = 4usize;
    let mut rows: Vec<Row> = Vec::new();

    // Device-to-device copy: the bandwidth yardstick. Bytes = read + write.
    let cw = sh.copy_words;
    let src = random_buf(k, &mut rng, cw, 1.0);
    let mut dst = k.alloc(cw);
    let ms = time_op(k, warmup, runs, &mut |_| k.copy(&mut dst, &src))?;
    rows.push(Row {
        op: "copy",
        shape: format!("{} MiB f32", (cw * f32b) >> 20),
        ms,
        bytes: (2 * cw * f32b) as f64,
        note: "dtod; read + write".into(),
    });
    drop((src, dst));

    // logprob forward/backward over one (N, V) logits buffer, allocated once. The backward
    // overwrites it with its gradient, which later runs read as logits: finite, non-zero
    // values of the same size, so the timing is unaffected.
    let (n, v) = (sh.n, sh.v);
    let shape = format!("N={n} V={v}");
    {
        let mut logits = random_buf(k, &mut rng, n * v, 3.0);
        let targets = k.upload_ids(&(0..n).map(|_| rng.below(v) as u32).collect::<Vec<_>>());
        let (mut lp, mut ent) = (k.alloc(n), k.alloc(n));
        let ch = LogprobChunk { row0: 0, rows: n, v, inv_temperature: 1.0 };
        // Bytes: read logits (N·V) and targets (N), write logp and H (2N).
        let ms =
            time_op(k, warmup, runs, &mut |_| k.logprob_entropy_forward(&logits, &targets, &mut lp, &mut ent, ch))?;
        rows.push(Row {
            op: "logprob_fwd",
            shape: shape.clone(),
            ms,
            bytes: ((n * v + 3 * n) * f32b) as f64,
            note: String::new(),
        });
        let (gl, gh) = (random_buf(k, &mut rng, n, 1.0), random_buf(k, &mut rng, n, 1.0));
        // Bytes: read logits (N·V), targets, dlogp, dH (3N); write dlogits (N·V).
        let ms = time_op(k, warmup, runs, &mut |_| k.logprob_entropy_backward(&mut logits, &targets, &gl, &gh, ch))?;
        rows.push(Row {
            op: "logprob_bwd",
            shape,
            ms,
            bytes: ((2 * n * v + 3 * n) * f32b) as f64,
            note: String::new(),
        });
    }

    // Group advantages: groups of adv_group, group scaling, eps 1e-4.
    let an = sh.adv_n;
    let groups = an / sh.adv_group;
    let host_offsets: Vec<u32> = (0..=groups).map(|g| (g * sh.adv_group) as u32).collect();
    let offsets = GroupOffsets::new(k, &host_offsets).map_err(Error::Invalid)?;
    // Bytes: read rewards (N) and offsets (G+1), write advantages (N).
    let bytes = (2 * an + groups + 1) * f32b;
    let sets: Vec<_> = (0..copies(bytes, warmup + runs, emulated)).map(|_| random_buf(k, &mut rng, an, 1.0)).collect();
    let mut out = k.alloc(an);
    let ms = time_op(k, warmup, runs, &mut |i| {
        k.group_advantage(
            &mut out,
            &sets[i % sets.len()],
            &offsets,
            AdvantageParams { scaling: AdvantageScaling::Group, eps: 1e-4, clip: None },
        )
    })?;
    let note = String::new();
    rows.push(Row { op: "group_advantage", shape: format!("N={an} G={groups}"), ms, bytes: bytes as f64, note });
    drop((sets, out));

    // Policy loss: S×L tokens, dapo, token level, eps 0.2/0.28, beta 0.04, entropy coef 0.01.
    let (s, l) = (sh.s, sh.l);
    let sl = s * l;
    let mut mask = vec![0.0f32; sl];
    for i in 0..s {
        let len = l / 2 + rng.below(l / 2 + 1);
        mask[i * l..i * l + len].fill(1.0);
    }
    let params = PolicyLossParams { beta: 0.04, entropy_coef: 0.01, ..PolicyLossParams::dapo(s, l) };
    // Bytes: read logp, logp_old, logp_ref, entropy, mask (5·S·L) and advantages (S); write
    // dlogp, dentropy (2·S·L) and the 16 metrics.
    let bytes = (7 * sl + s + pm::LEN) * f32b;
    struct PlSet<B: Backend> {
        lp: B::Buf,
        old: B::Buf,
        rf: B::Buf,
        adv: B::Buf,
        ent: B::Buf,
        mask: B::Buf,
    }
    let sets: Vec<PlSet<KernelBackend<D>>> = (0..copies(bytes, warmup + runs, emulated))
        .map(|_| {
            let lp: Vec<f32> = (0..sl).map(|_| -2.0 + 0.5 * rng.normal()).collect();
            let old: Vec<f32> = lp.iter().map(|x| x + 0.2 * rng.normal()).collect();
            let rf: Vec<f32> = lp.iter().map(|x| x + 0.2 * rng.normal()).collect();
            let ent: Vec<f32> = (0..sl).map(|_| 2.0 + rng.normal().abs()).collect();
            PlSet {
                lp: k.upload(&lp),
                old: k.upload(&old),
                rf: k.upload(&rf),
                adv: random_buf(k, &mut rng, s, 1.0),
                ent: k.upload(&ent),
                mask: k.upload(&mask),
            }
        })
        .collect();
    let (mut dlp, mut dh, mut met) = (k.alloc(sl), k.alloc(sl), k.alloc(pm::LEN));
    let ms = time_op(k, warmup, runs, &mut |i| {
        let p = &sets[i % sets.len()];
        let inputs = PolicyLossInputs {
            logp: &p.lp,
            logp_old: &p.old,
            logp_ref: Some(&p.rf),
            advantages: &p.adv,
            entropy: &p.ent,
            mask: &p.mask,
        };
        k.policy_loss(&mut dlp, &mut dh, &mut met, inputs, params)
    })?;
    rows.push(Row {
        op: "policy_loss",
        shape: format!("S={s} L={l}"),
        ms,
        bytes: bytes as f64,
        note: "dapo, token, beta 0.04".into(),
    });
    drop((sets, dlp, dh, met));

    // GRN forward/backward, the causal form in front of the policy head: B×T×C.
    let (b, t, c) = (sh.b, sh.t, sh.c);
    let btc = b * t * c;
    let shape = format!("B={b} T={t} C={c}");
    {
        let gs = GrnShape { b, t, c, eps: 1e-6 };
        // Bytes (forward): read x (B·T·C) twice (prefix norms, then the rows), γ, β (2C);
        // write G and out (2·B·T·C), μ (B·T), and read G back once.
        let fwd_bytes = (5 * btc + b * t + 2 * c) * f32b;
        let n_sets = copies(btc * f32b, warmup + runs, emulated);
        let xs: Vec<_> = (0..n_sets).map(|_| random_buf(k, &mut rng, btc, 1.0)).collect();
        let (gamma, beta) = (random_buf(k, &mut rng, c, 0.5), random_buf(k, &mut rng, c, 0.5));
        let (mut out, mut g, mut mean) = (k.alloc(btc), k.alloc(btc), k.alloc(b * t));
        let ms = time_op(k, warmup, runs, &mut |i| {
            k.grn_causal_forward(
                &mut out,
                GrnCausalStats { g: &mut g, mean: &mut mean },
                &xs[i % xs.len()],
                GrnParams { gamma: &gamma, beta: &beta },
                gs,
            )
        })?;
        rows.push(Row { op: "grn_fwd", shape: shape.clone(), ms, bytes: fwd_bytes as f64, note: "causal".into() });
        // Bytes (backward): read dy, x, G twice each (the row coefficients, then the reverse
        // scan), μ (B·T), γ; write dx (B·T·C) and the (B·T) coefficients. The (B, 2C) partial
        // sums are not counted.
        let bwd_bytes = (7 * btc + 3 * b * t + 5 * c) * f32b;
        k.grn_causal_forward(
            &mut out,
            GrnCausalStats { g: &mut g, mean: &mut mean },
            &xs[0],
            GrnParams { gamma: &gamma, beta: &beta },
            gs,
        );
        let dys: Vec<_> = (0..n_sets.min(2)).map(|_| random_buf(k, &mut rng, btc, 1.0)).collect();
        let (mut dgamma, mut dbeta) = (k.alloc(c), k.alloc(c));
        let mut dx = k.alloc(btc);
        let ms = time_op(k, warmup, runs, &mut |i| {
            let dy = &dys[i % dys.len()];
            k.grn_causal_backward(
                &mut dx,
                GrnParams { gamma: &mut dgamma, beta: &mut dbeta },
                dy,
                &xs[0],
                &gamma,
                GrnCausalStats { g: &g, mean: &mean },
                gs,
            )
        })?;
        let note = if n_sets > 1 { "causal, dy rotated over 2 sets" } else { "causal" };
        rows.push(Row { op: "grn_bwd", shape, ms, bytes: bwd_bytes as f64, note: note.into() });
    }

    // GEMM: GPT-2's qkv projection, out (m, n) = x (m, k) · Wᵀ (n, k) stored as HF's (k, n).
    let (m, nn, kk) = sh.mm;
    let (x, w) = (random_buf(k, &mut rng, m * kk, 1.0), random_buf(k, &mut rng, kk * nn, 0.02));
    let mut y = k.alloc(m * nn);
    let ms = time_op(k, warmup, runs, &mut |_| k.matmul(&mut y, &x, &w, None, Gemm::nn(m, nn, kk)))?;
    let tflops = 2.0 * (m * nn * kk) as f64 / (ms * 1e-3) / 1e12;
    let mm_bytes = ((m * kk + kk * nn + m * nn) * f32b) as f64;
    let gemm_note = format!("{tflops:.2} TFLOP/s (f32 data, TF32 on a GPU)");

    // The table.
    let copy_gbs = rows[0].bytes / (rows[0].ms * 1e-3) / 1e9;
    outln!("{:<16} {:<20} {:>10} {:>12} {:>9} {:>8}  note", "op", "shape", "median_ms", "bytes_MB", "GB/s", "of_copy");
    for r in &rows {
        let gbs = r.bytes / (r.ms * 1e-3) / 1e9;
        outln!(
            "{:<16} {:<20} {:>10.4} {:>12.2} {:>9.1} {:>7.1}%  {}",
            r.op,
            r.shape,
            r.ms,
            r.bytes / 1e6,
            gbs,
            100.0 * gbs / copy_gbs,
            r.note
        );
    }
    outln!(
        "{:<16} {:<20} {:>10.4} {:>12.2} {:>9} {:>8}  {}",
        "matmul",
        format!("m={m} n={nn} k={kk}"),
        ms,
        mm_bytes / 1e6,
        "-",
        "-",
        gemm_note
    );
    Ok(())
}

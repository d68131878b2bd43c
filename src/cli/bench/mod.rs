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
//!
//! Here: the arguments, the dispatch on the backend and the kernel table's printing;
//! `model.rs` runs the GPT-2 workloads, `kernels.rs` measures the kernel table.

mod kernels;
mod model;

use super::device::{resolve, DeviceChoice, PrecisionArgs, Resolved};
use crate::backend::prelude::*;
use crate::backend::{Dtype, MatmulPrecision, Precision};

/// Dense peak TFLOP/s of an H100/H200 SXM at each precision (NVIDIA's datasheet; the H200 has
/// the H100's SMs and clocks, with more and faster memory: 141 GB at 4.8 TB/s): the default
/// denominator of MFU.
pub fn peak_tflops(p: Precision) -> f64 {
    match (p.dtype, p.matmul) {
        (Dtype::Bf16, _) => 989.4,
        (Dtype::F32, MatmulPrecision::Tf32) => 494.7,
        (Dtype::F32, MatmulPrecision::F32) => 66.9,
    }
}
use crate::error::Result;
use kernels::kernel_bench;
use model::{model_bench, Workloads};

/// A GPT-2 workload of `dapo bench`, for `--only`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// Forward+backward and forward alone (the CPU's comparison with PyTorch).
    FwdBwd,
    /// The training step (forward, backward, AdamW) with tokens/s, MFU and peak memory.
    Train,
    /// Rollout decoding.
    Decode,
    /// One RL step.
    RlStep,
}

/// Arguments of `dapo bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Backend to time: cpu, cuda, cuda:N, emu (the kernel emulator), or auto.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    /// CPU worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    #[command(flatten)]
    precision: PrecisionArgs,
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
    /// Run only these GPT-2 workloads (comma-separated), each alone in its process, e.g. for
    /// its peak RSS (`bench/compare_cpu.sh`). Default: all of them.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Part>,
    /// Decode by sampling at temperature 1 (top-k 0, top-p 1) instead of greedily (the CPU's
    /// default; a GPU always samples).
    #[arg(long)]
    decode_sample: bool,
    /// Emulator: run the training step and one RL step at full size (`--model`, default GPT-2
    /// 124M, B×T from --batch-size/--seq-len, default 1×128) instead of the tiny shapes, once,
    /// for the peak device memory its meter counts in f32 or bf16 (`--dtype`); no kernel
    /// table. Slow: minutes at 124M
    #[arg(long)]
    full_size: bool,
    /// GPU: skip the GPT-2 workloads and print only the kernel table.
    #[arg(long)]
    kernels_only: bool,
    /// Sequences per forward/backward pass of the RL step's update (0: the whole batch).
    #[arg(long)]
    rl_micro_batch: Option<usize>,
    /// The device's peak dense throughput in TFLOP/s at the run's precision, for MFU (default:
    /// H100/H200 SXM's 989.4 for bf16, 494.7 for TF32, 66.9 for f32)
    #[arg(long)]
    peak_tflops: Option<f64>,
}

/// The median of `xs` (of an even count, the upper middle value); `xs` must not be empty.
fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

/// Runs `dapo bench`.
pub fn run(a: BenchArgs) -> Result<()> {
    // `auto` without a usable GPU resolves to the CPU (and says why).
    match resolve(a.device, a.threads, a.precision.choice())? {
        Resolved::Cpu(k) => model_bench(k, &Workloads::cpu(&a), a.skip_rl),
        Resolved::Cuda(k) => {
            outln!("precision: {}", k.precision().describe());
            if !a.kernels_only {
                model_bench(k.clone(), &Workloads::gpu(&a), a.skip_rl)?;
            }
            kernel_bench(&k, &a, false)
        }
        Resolved::Emu(k) => {
            outln!("precision: {}", k.precision().describe());
            if a.full_size {
                return model_bench(k, &Workloads::emulated_full_size(&a), a.skip_rl);
            }
            if !a.kernels_only {
                model_bench(k.clone(), &Workloads::small(), a.skip_rl)?;
            }
            kernel_bench(&k, &a, true)
        }
    }
}

/// One line of the kernel table.
struct Row {
    op: &'static str,
    shape: String,
    ms: f64,
    bytes: f64,
    note: String,
}

/// Prints the kernel table: per row its median time, bytes moved, GB/s and that bandwidth as a
/// fraction of the copy's (`rows[0]`, the yardstick), then the GEMM's line, whose figure is
/// TFLOP/s (in its note) rather than bandwidth. Errors when standard output is closed.
fn print_kernel_table(rows: &[Row], gemm: &Row) -> Result<()> {
    let copy_gbs = rows[0].bytes / (rows[0].ms * 1e-3) / 1e9;
    outln!("{:<16} {:<20} {:>10} {:>12} {:>9} {:>8}  note", "op", "shape", "median_ms", "bytes_MB", "GB/s", "of_copy");
    for r in rows {
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
        gemm.op,
        gemm.shape,
        gemm.ms,
        gemm.bytes / 1e6,
        "-",
        "-",
        gemm.note
    );
    Ok(())
}

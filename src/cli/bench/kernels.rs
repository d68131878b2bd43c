//! The kernel table of `dapo bench` (a GPU or the emulator): each fused kernel's median device
//! time and minimal bytes moved, on the shapes `bench/torch_reference.py` times PyTorch eager
//! on, beside a device-to-device copy and one GEMM.

use super::{median, print_kernel_table, BenchArgs, Row};
use crate::backend::device::Device;
use crate::backend::kernel::KernelBackend;
use crate::backend::prelude::*;
use crate::backend::{policy_metric as pm, Gemm, GrnShape, LogprobChunk, PolicyLossInputs, PolicyLossParams};
use crate::backend::{AdvantageParams, GrnCausalStats, GrnParams, GroupOffsets};
use crate::error::{Error, Result};
use crate::rl::advantage::AdvantageScaling;
use crate::util::rng::Rng;

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

pub(super) fn kernel_bench<D: Device>(k: &KernelBackend<D>, a: &BenchArgs, emulated: bool) -> Result<()> {
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

    let gemm = Row { op: "matmul", shape: format!("m={m} n={nn} k={kk}"), ms, bytes: mm_bytes, note: gemm_note };
    print_kernel_table(&rows, &gemm)
}

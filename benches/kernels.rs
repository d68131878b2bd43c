//! Criterion benchmarks of the fused kernels (log-prob + entropy forward/backward, group
//! advantages, policy loss, GRN forward/backward, sampling) on GPU 0 through `CudaBackend`, at the shapes
//! of `dapo bench --device cuda` and `bench/torch_reference.py`, with `Throughput::Bytes` set to
//! the minimal bytes each op moves (so criterion prints GB/s). Without a usable GPU the GPU
//! group says why and is skipped. A CPU-oracle group of the same ops at small shapes always
//! runs, so the bench is useful (and exercised by `cargo bench -- --test`) everywhere.
//!
//! On the GPU every iteration ends with a device synchronize: criterion measures wall time,
//! and the ops only queue work. `dapo bench --device cuda` reports CUDA-event times instead.

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use gepa_dapo_grn::backend::cpu::CpuBackend;
use gepa_dapo_grn::backend::cuda::{CudaBackend, CudaDevice};
use gepa_dapo_grn::backend::device::Device;
use gepa_dapo_grn::backend::prelude::*;
use gepa_dapo_grn::backend::{
    policy_metric as pm, Backend, GrnShape, LogprobChunk, PolicyLossInputs, PolicyLossParams, SampleParams,
};
use gepa_dapo_grn::backend::{
    AdvantageParams, GrnCausalStats, GrnParams, GrnSeqStats, GrnStepShape, GroupOffsets, Masked,
};
use gepa_dapo_grn::rl::advantage::{group_advantages, AdvantageConfig, AdvantageScaling};
use gepa_dapo_grn::util::rng::Rng;

const F32: u64 = 4;

fn randn(rng: &mut Rng, n: usize, std: f32) -> Vec<f32> {
    (0..n).map(|_| rng.normal() * std).collect()
}

/// (B,T) mask: each sequence right-padded by 0–20% of T (~10% padding on average).
fn pad_mask(rng: &mut Rng, b: usize, t: usize) -> Vec<f32> {
    let mut m = vec![0.0f32; b * t];
    for bi in 0..b {
        let len = t - rng.below(t / 5 + 1);
        m[bi * t..bi * t + len].fill(1.0);
    }
    m
}

/// Bytes each op must move at least (each input read once, each output written once), as
/// `bench/torch_reference.py` counts them.
mod bytes {
    use super::F32;
    /// Read logits (N·V), targets (N); write logp, H (2N).
    pub fn logprob_fwd(n: u64, v: u64) -> u64 {
        (n * v + 3 * n) * F32
    }
    /// Read logits (N·V), the counters (2N); write a token and a log-prob (2N). (The kernel
    /// re-reads the row on each of its passes; this counts one read.)
    pub fn sample(n: u64, v: u64) -> u64 {
        (n * v + 4 * n) * F32
    }
    /// Read logits (N·V), targets, dlogp, dH (3N); write dlogits (N·V).
    pub fn logprob_bwd(n: u64, v: u64) -> u64 {
        (2 * n * v + 3 * n) * F32
    }
    /// Read rewards (N), offsets (G+1); write advantages (N).
    pub fn advantage(n: u64, g: u64) -> u64 {
        (2 * n + g + 1) * F32
    }
    /// Read logp, logp_old, logp_ref, entropy, mask (5·S·L), advantages (S); write dlogp,
    /// dentropy (2·S·L) and 16 metrics.
    pub fn policy_loss(s: u64, l: u64) -> u64 {
        (7 * s * l + s + 16) * F32
    }
    /// Sequence-wide form. Read x (B·T·C), mask (B·T), γ, β (2C); write out (B·T·C), G, N
    /// (2·B·C), μ (B).
    pub fn grn_fwd(b: u64, t: u64, c: u64) -> u64 {
        (2 * b * t * c + b * t + 2 * c + 2 * b * c + b) * F32
    }
    /// Sequence-wide form. Read dy, x (2·B·T·C), mask, γ, G, N, μ, dγ, dβ; write dx (B·T·C),
    /// dγ, dβ.
    pub fn grn_bwd(b: u64, t: u64, c: u64) -> u64 {
        (3 * b * t * c + b * t + c + 2 * b * c + b + 4 * c) * F32
    }
    /// Causal form. Read x twice (prefix norms, then the rows), G once, γ, β; write G, out
    /// (B·T·C each) and μ (B·T).
    pub fn grn_causal_fwd(b: u64, t: u64, c: u64) -> u64 {
        (5 * b * t * c + b * t + 2 * c) * F32
    }
    /// Causal form. Read dy, x, G twice each (row coefficients, then the reverse scan), μ and
    /// the coefficients; write dx (B·T·C) and the coefficients (B·T).
    pub fn grn_causal_bwd(b: u64, t: u64, c: u64) -> u64 {
        (7 * b * t * c + 3 * b * t + 5 * c) * F32
    }
    /// Decode step of R rows: read x (R·C), γ, β; read and write the running sums (R·C
    /// touched); write out (R·C).
    pub fn grn_causal_step(r: u64, c: u64) -> u64 {
        (4 * r * c + 2 * c) * F32
    }
}

/// GRN on backend `k`: the causal form (forward, backward, one decode step of B rows) and the
/// sequence-wide form (forward, backward) at (B, T, C), each call waited for.
fn bench_grn<K: Backend>(g: &mut BenchmarkGroup<'_, WallTime>, k: &K, rng: &mut Rng, b: usize, t: usize, c: usize) {
    let (btc, gs) = (b * t * c, GrnShape { b, t, c, eps: 1e-6 });
    let (x, dy) = (k.upload(&randn(rng, btc, 1.0)), k.upload(&randn(rng, btc, 1.0)));
    let mask = k.upload(&pad_mask(rng, b, t));
    let (gamma, beta) = (k.upload(&randn(rng, c, 0.5)), k.upload(&randn(rng, c, 0.5)));
    let (mut out, mut dx, mut dgamma, mut dbeta) = (k.alloc(btc), k.alloc(btc), k.alloc(c), k.alloc(c));
    let shape = format!("B={b} T={t} C={c}");
    let (ub, ut, uc) = (b as u64, t as u64, c as u64);

    let (mut gc, mut mc) = (k.alloc(btc), k.alloc(b * t));
    g.throughput(Throughput::Bytes(bytes::grn_causal_fwd(ub, ut, uc)));
    g.bench_function(BenchmarkId::new("grn_causal_fwd", &shape), |bch| {
        bch.iter(|| {
            k.grn_causal_forward(
                &mut out,
                GrnCausalStats { g: &mut gc, mean: &mut mc },
                &x,
                GrnParams { gamma: &gamma, beta: &beta },
                gs,
            );
            k.synchronize()
        })
    });
    g.throughput(Throughput::Bytes(bytes::grn_causal_bwd(ub, ut, uc)));
    g.bench_function(BenchmarkId::new("grn_causal_bwd", &shape), |bch| {
        bch.iter(|| {
            k.grn_causal_backward(
                &mut dx,
                GrnParams { gamma: &mut dgamma, beta: &mut dbeta },
                &dy,
                &x,
                &gamma,
                GrnCausalStats { g: &gc, mean: &mc },
                gs,
            );
            k.synchronize()
        })
    });
    let (mut sums, mut rows_out) = (k.alloc(b * c), k.alloc(b * c));
    let (xr, seq) = (k.upload(&randn(rng, b * c, 1.0)), k.upload_ids(&(0..b as u32).collect::<Vec<_>>()));
    g.throughput(Throughput::Bytes(bytes::grn_causal_step(ub, uc)));
    g.bench_function(BenchmarkId::new("grn_causal_step", format!("R={b} C={c}")), |bch| {
        bch.iter(|| {
            k.grn_causal_step(
                &mut rows_out,
                &mut sums,
                &xr,
                &seq,
                GrnParams { gamma: &gamma, beta: &beta },
                GrnStepShape { rows: b, c, eps: 1e-6 },
            );
            k.synchronize()
        })
    });

    let (mut gsq, mut ms, mut ns) = (k.alloc(b * c), k.alloc(b), k.alloc(b * c));
    g.throughput(Throughput::Bytes(bytes::grn_fwd(ub, ut, uc)));
    g.bench_function(BenchmarkId::new("grn_fwd", &shape), |bch| {
        bch.iter(|| {
            k.grn_sequence_forward(
                &mut out,
                GrnSeqStats { g: &mut gsq, mean: &mut ms, n: &mut ns },
                Masked { x: &x, mask: &mask },
                GrnParams { gamma: &gamma, beta: &beta },
                gs,
            );
            k.synchronize()
        })
    });
    g.throughput(Throughput::Bytes(bytes::grn_bwd(ub, ut, uc)));
    g.bench_function(BenchmarkId::new("grn_bwd", &shape), |bch| {
        bch.iter(|| {
            k.grn_sequence_backward(
                &mut dx,
                GrnParams { gamma: &mut dgamma, beta: &mut dbeta },
                &dy,
                Masked { x: &x, mask: &mask },
                &gamma,
                GrnSeqStats { g: &gsq, mean: &ms, n: &ns },
                gs,
            );
            k.synchronize()
        })
    });
}

/// The sampling configurations benchmarked: untruncated at T = 1, and T = 0.7 with top-k 50
/// and top-p 0.9 (three radix selects per row).
fn sample_configs() -> [(&'static str, SampleParams); 2] {
    let p = |temperature, top_k, top_p| SampleParams { temperature, top_k, top_p, seed: 7, step: 1 };
    [("T=1", p(1.0, 0, 1.0)), ("T=0.7 k=50 p=0.9", p(0.7, 50, 0.9))]
}

/// `sample` over `n` rows of V logits (one (sequence, position) per row, as a decode step
/// has), in each of [`sample_configs`].
fn bench_sample<K: Backend>(g: &mut BenchmarkGroup<'_, WallTime>, k: &K, logits: &K::Buf, n: usize, v: usize) {
    let ctr: Vec<[u32; 2]> = (0..n as u32).map(|r| [r, 100]).collect();
    g.throughput(Throughput::Bytes(bytes::sample(n as u64, v as u64)));
    for (name, p) in sample_configs() {
        g.bench_function(BenchmarkId::new("sample", format!("N={n} V={v} {name}")), |bch| {
            bch.iter(|| k.sample(logits, v, &ctr, p))
        });
    }
}

fn policy_params(s: usize, l: usize) -> PolicyLossParams {
    PolicyLossParams { beta: 0.04, entropy_coef: 0.01, ..PolicyLossParams::dapo(s, l) }
}

/// The fused kernels on GPU 0 at the full shapes.
fn gpu(c: &mut Criterion) {
    let dev = match CudaDevice::open(0) {
        Ok(d) => d,
        Err(why) => {
            println!("kernels bench: skipped, no GPU: {why}");
            return;
        }
    };
    let k = CudaBackend::new(dev);
    let sync = |k: &CudaBackend| k.device().synchronize().expect("synchronize");
    let mut rng = Rng::new(1);
    let mut g = c.benchmark_group(format!("kernels_gpu ({})", k.device().describe()));
    g.sample_size(20);

    // logprob: N = 16384 rows of GPT-2's V = 50257 (3.3 GB of logits, allocated once; filled
    // by repeating a random 16 Mi-value block on the device).
    let (n, v) = (16384usize, 50257usize);
    {
        let block = k.upload(&randn(&mut rng, 1 << 24, 3.0));
        let mut logits = k.alloc(n * v);
        for off in (0..n * v).step_by(1 << 24) {
            k.copy_range(&mut logits, off, &block, 0, (1usize << 24).min(n * v - off));
        }
        let targets = k.upload_ids(&(0..n).map(|_| rng.below(v) as u32).collect::<Vec<_>>());
        let (mut lp, mut ent) = (k.alloc(n), k.alloc(n));
        let (gl, gh) = (k.upload(&randn(&mut rng, n, 1.0)), k.upload(&randn(&mut rng, n, 1.0)));
        let ch = LogprobChunk { row0: 0, rows: n, v, inv_temperature: 1.0 };
        let shape = format!("N={n} V={v}");
        g.throughput(Throughput::Bytes(bytes::logprob_fwd(n as u64, v as u64)));
        g.bench_function(BenchmarkId::new("logprob_fwd", &shape), |bch| {
            bch.iter(|| {
                k.logprob_entropy_forward(&logits, &targets, &mut lp, &mut ent, ch);
                sync(&k)
            })
        });
        // The backward overwrites the logits with their gradient, which the next iteration
        // reads as logits: finite values of the same size, same work.
        g.throughput(Throughput::Bytes(bytes::logprob_bwd(n as u64, v as u64)));
        g.bench_function(BenchmarkId::new("logprob_bwd", &shape), |bch| {
            bch.iter(|| {
                k.logprob_entropy_backward(&mut logits, &targets, &gl, &gh, ch);
                sync(&k)
            })
        });
    }

    // Group advantages: 16384 rewards in 2048 groups of 8, group scaling, eps 1e-4.
    let (an, gs) = (16384usize, 8usize);
    let host_offsets: Vec<u32> = (0..=an / gs).map(|i| (i * gs) as u32).collect();
    let offsets = GroupOffsets::new(&k, &host_offsets).expect("valid offsets");
    let rewards = k.upload(&randn(&mut rng, an, 1.0));
    let mut adv = k.alloc(an);
    g.throughput(Throughput::Bytes(bytes::advantage(an as u64, (an / gs) as u64)));
    g.bench_function(BenchmarkId::new("group_advantage", format!("N={an} G={}", an / gs)), |bch| {
        bch.iter(|| {
            k.group_advantage(
                &mut adv,
                &rewards,
                &offsets,
                AdvantageParams { scaling: AdvantageScaling::Group, eps: 1e-4, clip: None },
            );
            sync(&k)
        })
    });

    // Policy loss: S = 128 sequences of L = 128 tokens.
    let (s, l) = (128usize, 128usize);
    let lp: Vec<f32> = (0..s * l).map(|_| -2.0 + 0.5 * rng.normal()).collect();
    let old: Vec<f32> = lp.iter().map(|x| x + 0.2 * rng.normal()).collect();
    let rf: Vec<f32> = lp.iter().map(|x| x + 0.2 * rng.normal()).collect();
    let ent: Vec<f32> = (0..s * l).map(|_| 2.0 + rng.normal().abs()).collect();
    let (d_lp, d_old, d_rf, d_ent) = (k.upload(&lp), k.upload(&old), k.upload(&rf), k.upload(&ent));
    let (d_adv, d_mask) = (k.upload(&randn(&mut rng, s, 1.0)), k.upload(&pad_mask(&mut rng, s, l)));
    let (mut dlp, mut dh, mut met) = (k.alloc(s * l), k.alloc(s * l), k.alloc(pm::LEN));
    g.throughput(Throughput::Bytes(bytes::policy_loss(s as u64, l as u64)));
    g.bench_function(BenchmarkId::new("policy_loss", format!("S={s} L={l}")), |bch| {
        bch.iter(|| {
            let inputs = PolicyLossInputs {
                logp: &d_lp,
                logp_old: &d_old,
                logp_ref: Some(&d_rf),
                advantages: &d_adv,
                entropy: &d_ent,
                mask: &d_mask,
            };
            k.policy_loss(&mut dlp, &mut dh, &mut met, inputs, policy_params(s, l));
            sync(&k)
        })
    });

    // GRN: B = 16, T = 1024, C = 768 (~10% padding for the sequence-wide form).
    bench_grn(&mut g, &k, &mut rng, 16, 1024, 768);

    // Sampling: one decode step of 64 sequences over GPT-2's V = 50257. `sample` downloads its
    // results, so every iteration already waits for the device.
    let (sn, sv) = (64usize, 50257usize);
    bench_sample(&mut g, &k, &k.upload(&randn(&mut rng, sn * sv, 3.0)), sn, sv);
    g.finish();
}

/// The CPU oracles of the same ops at small shapes (the reference the kernels are held to).
fn cpu_oracle(c: &mut Criterion) {
    let k = CpuBackend::new(None);
    let mut rng = Rng::new(2);
    let mut g = c.benchmark_group("kernels_cpu_oracle");
    g.sample_size(10);

    let (n, v) = (64usize, 1000usize);
    let logits = randn(&mut rng, n * v, 3.0);
    let targets: Vec<u32> = (0..n).map(|_| rng.below(v) as u32).collect();
    let (mut lp, mut ent) = (vec![0.0f32; n], vec![0.0f32; n]);
    let (gl, gh) = (randn(&mut rng, n, 1.0), randn(&mut rng, n, 1.0));
    let ch = LogprobChunk { row0: 0, rows: n, v, inv_temperature: 1.0 };
    let shape = format!("N={n} V={v}");
    g.throughput(Throughput::Bytes(bytes::logprob_fwd(n as u64, v as u64)));
    g.bench_function(BenchmarkId::new("logprob_fwd", &shape), |bch| {
        bch.iter(|| k.logprob_entropy_forward(&logits, &targets, &mut lp, &mut ent, ch))
    });
    let mut dlog = logits.clone();
    g.throughput(Throughput::Bytes(bytes::logprob_bwd(n as u64, v as u64)));
    g.bench_function(BenchmarkId::new("logprob_bwd", &shape), |bch| {
        bch.iter(|| {
            dlog.copy_from_slice(&logits);
            k.logprob_entropy_backward(&mut dlog, &targets, &gl, &gh, ch)
        })
    });

    let (an, gs) = (1024usize, 8usize);
    let rewards: Vec<f64> = (0..an).map(|_| rng.normal() as f64).collect();
    let sizes = vec![gs; an / gs];
    let cfg = AdvantageConfig { scaling: AdvantageScaling::Group, eps: 1e-4, clip: None };
    g.throughput(Throughput::Bytes(bytes::advantage(an as u64, (an / gs) as u64)));
    g.bench_function(BenchmarkId::new("group_advantage", format!("N={an} G={}", an / gs)), |bch| {
        bch.iter(|| group_advantages(&rewards, &sizes, &cfg).expect("valid groups"))
    });

    let (s, l) = (16usize, 64usize);
    let lp_: Vec<f32> = (0..s * l).map(|_| -2.0 + 0.5 * rng.normal()).collect();
    let old: Vec<f32> = lp_.iter().map(|x| x + 0.2 * rng.normal()).collect();
    let rf: Vec<f32> = lp_.iter().map(|x| x + 0.2 * rng.normal()).collect();
    let ent_: Vec<f32> = (0..s * l).map(|_| 2.0 + rng.normal().abs()).collect();
    let (adv, mask) = (randn(&mut rng, s, 1.0), pad_mask(&mut rng, s, l));
    let (mut dlp, mut dh, mut met) = (vec![0.0f32; s * l], vec![0.0f32; s * l], vec![0.0f32; pm::LEN]);
    g.throughput(Throughput::Bytes(bytes::policy_loss(s as u64, l as u64)));
    g.bench_function(BenchmarkId::new("policy_loss", format!("S={s} L={l}")), |bch| {
        bch.iter(|| {
            let inputs = PolicyLossInputs::<CpuBackend> {
                logp: &lp_,
                logp_old: &old,
                logp_ref: Some(&rf),
                advantages: &adv,
                entropy: &ent_,
                mask: &mask,
            };
            k.policy_loss(&mut dlp, &mut dh, &mut met, inputs, policy_params(s, l))
        })
    });

    bench_grn(&mut g, &k, &mut rng, 2, 64, 128);

    let (sn, sv) = (64usize, 1000usize);
    bench_sample(&mut g, &k, &randn(&mut rng, sn * sv, 3.0), sn, sv);
    g.finish();
}

criterion_group!(benches, gpu, cpu_oracle);
criterion_main!(benches);

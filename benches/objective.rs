//! The chunked DAPO objective on the CPU backend at N = 4096 tokens (S = 16 sequences of
//! L = 256), V = 50257, C = 768 (GPT-2's lm_head). Throughput is in tokens per iteration.
//!
//! Before timing, one call per chunk size is run on a fresh objective under a counting global
//! allocator, and the peak bytes allocated during the call (workspace, plus whatever the
//! matmul allocates) are printed next to the workspace formula and the (N, V) logits the
//! chunking avoids: the peak grows with chunk·V, not N·V. On the CPU it is about twice the
//! workspace formula, because the `gemm` crate packs the transposed (chunk, V) d-logits
//! operand of the dW product into a buffer of the same size; still O(chunk·V).
//!
//! `OBJECTIVE_BENCH_N` overrides N (a multiple of 256) for a quicker run.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gepa_dapo_grn::backend::cpu::CpuBackend;
use gepa_dapo_grn::backend::prelude::*;
use gepa_dapo_grn::rl::objective::{workspace_bytes, DapoObjective, ObjectiveBatch, ObjectiveConfig};
use gepa_dapo_grn::util::rng::Rng;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The system allocator, counting live bytes and their high-water mark.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator with this layout.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const V: usize = 50257;
const C: usize = 768;
const L: usize = 256;

fn mib(b: usize) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn bench(c: &mut Criterion) {
    let n: usize = std::env::var("OBJECTIVE_BENCH_N").ok().and_then(|s| s.parse().ok()).unwrap_or(4096);
    let s = (n / L).max(1);
    let n = s * L;
    let k = CpuBackend::new(None);
    let mut rng = Rng::new(7);
    let hidden: Vec<f32> = (0..n * C).map(|_| rng.normal()).collect();
    let weight: Vec<f32> = (0..V * C).map(|_| 0.02 * rng.normal()).collect();
    let targets: Vec<u32> = (0..n).map(|_| rng.below(V) as u32).collect();
    // Ragged completions: sequence i keeps its first L − 8·i tokens.
    let mask: Vec<f32> = (0..n).map(|r| if r % L < L - 8 * (r / L).min(L / 8 - 1) { 1.0 } else { 0.0 }).collect();
    let advantages: Vec<f32> = (0..s).map(|_| rng.normal()).collect();
    let (hidden, weight, targets, mask, advantages) =
        (k.upload(&hidden), k.upload(&weight), k.upload_ids(&targets), k.upload(&mask), k.upload(&advantages));
    // logp_old near the current policy's log-probs, so ratios straddle the clip bounds.
    let mut probe = DapoObjective::<CpuBackend>::new(ObjectiveConfig::default()).unwrap();
    let (lp, _) = probe.token_logprobs(&k, &hidden, &weight, &targets, n, C, V).unwrap();
    drop(probe);
    let logp_old: Vec<f32> = lp.iter().map(|&x| x + 0.2 * rng.normal()).collect();
    let logp_ref: Vec<f32> = lp.iter().map(|&x| x + 0.1 * rng.normal()).collect();
    let (logp_old, logp_ref) = (k.upload(&logp_old), k.upload(&logp_ref));
    let batch = ObjectiveBatch::<CpuBackend> {
        hidden: &hidden,
        weight: &weight,
        targets: &targets,
        mask: &mask,
        advantages: &advantages,
        logp_old: &logp_old,
        logp_ref: Some(&logp_ref),
        s,
        l: L,
        c: C,
        v: V,
        norm: None,
    };
    let cfg = ObjectiveConfig { beta: 0.04, ..ObjectiveConfig::default() };
    let (mut gh, mut gw) = (k.alloc(n * C), k.alloc(V * C));

    println!("objective N={n} V={V} C={C} ({}); full (N,V) logits would be {:.0} MiB", k.name(), mib(4 * n * V));
    for chunk in [256, 1024] {
        let cfg = ObjectiveConfig { chunk_rows: chunk, ..cfg.clone() };
        let base = LIVE.load(Relaxed);
        PEAK.store(base, Relaxed);
        let t = std::time::Instant::now();
        let mut obj = DapoObjective::<CpuBackend>::new(cfg).unwrap();
        let m = obj.forward_backward(&k, &batch, &mut gh, &mut gw).unwrap();
        drop(obj);
        let peak = PEAK.load(Relaxed) - base;
        println!(
            "  chunk {chunk:5}: peak allocated {:.1} MiB (workspace formula {:.1} MiB), {:.2} s, loss {:.5}, clip_low {:.3}, clip_high {:.3}",
            mib(peak),
            mib(workspace_bytes(chunk, n, C, V)),
            t.elapsed().as_secs_f64(),
            m.loss,
            m.clip_frac_low,
            m.clip_frac_high
        );
    }

    let mut group = c.benchmark_group("objective");
    group.sample_size(10);
    group.warm_up_time(std::time::Duration::from_millis(1));
    group.measurement_time(std::time::Duration::from_secs(1));
    group.sampling_mode(criterion::SamplingMode::Flat);
    group.throughput(Throughput::Elements(n as u64));
    let mut obj = DapoObjective::<CpuBackend>::new(cfg).unwrap();
    group.bench_function(format!("dapo_fwd_bwd_N{n}_V{V}_C{C}_chunk1024"), |b| {
        b.iter(|| obj.forward_backward(&k, &batch, &mut gh, &mut gw).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

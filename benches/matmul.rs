//! CPU matmul throughput at GPT-2 124M's layer shapes (N = B·T = 1024 rows), forward and
//! the two backward products. Reported as elements/s of the output; FLOP/s = 2·k × that.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gepa_dapo_grn::backend::cpu::CpuBackend;
use gepa_dapo_grn::backend::prelude::*;
use gepa_dapo_grn::backend::Gemm;
use gepa_dapo_grn::util::rng::Rng;

fn bench(c: &mut Criterion) {
    let k = CpuBackend::new(None);
    let mut rng = Rng::new(0);
    let mut group = c.benchmark_group("matmul");
    group.sample_size(10);
    let n = 1024;
    // (label, m, n, k, trans_a, trans_b): qkv forward, mlp forward, the mlp's weight gradient
    // (Aᵀ·B) and input gradient (A·Bᵀ).
    for (label, m, nn, kk, ta, tb) in [
        ("qkv_fwd", n, 3 * 768, 768, false, false),
        ("fc_fwd", n, 4 * 768, 768, false, false),
        ("fc_dweight", 768, 4 * 768, n, true, false),
        ("fc_dinput", n, 768, 4 * 768, false, true),
    ] {
        let a = k.upload(&(0..m * kk).map(|_| rng.normal()).collect::<Vec<_>>());
        let b = k.upload(&(0..kk * nn).map(|_| rng.normal()).collect::<Vec<_>>());
        let mut out = k.alloc(m * nn);
        let g = Gemm { m, n: nn, k: kk, trans_a: ta, trans_b: tb, accumulate: false };
        group.throughput(Throughput::Elements((2 * m * nn * kk) as u64));
        group.bench_with_input(BenchmarkId::new(label, format!("{m}x{nn}x{kk}")), &g, |bench, &g| {
            bench.iter(|| k.matmul(&mut out, &a, &b, None, g))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! One GPT-2 forward+backward step on the CPU backend. The `small` shape keeps
//! `cargo bench` quick; `dapo bench --device cpu` times the full 124M shape.
//! Throughput is in tokens (B·T per iteration).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gepa_dapo_grn::backend::cpu::CpuBackend;
use gepa_dapo_grn::model::{Gpt2, Gpt2Config};
use gepa_dapo_grn::util::rng::Rng;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("gpt2_step");
    group.sample_size(10);
    for (name, b, t) in [("small", 8, 128), ("gpt2", 1, 128)] {
        let cfg = Gpt2Config::named(name, 50257).unwrap();
        let mut model = Gpt2::random(CpuBackend::new(None), cfg.clone(), 0).unwrap();
        let mut rng = Rng::new(1);
        let ids: Vec<u32> = (0..b * t).map(|_| rng.below(cfg.vocab_size) as u32).collect();
        let tgt: Vec<u32> = (0..b * t).map(|_| rng.below(cfg.vocab_size) as u32).collect();
        let w = vec![1.0 / (b * t) as f32; b * t];
        group.throughput(Throughput::Elements((b * t) as u64));
        group.bench_function(format!("{name}_fwd_bwd_B{b}_T{t}"), |bench| {
            bench.iter(|| {
                model.zero_grad();
                model.forward_backward(&ids, &tgt, &w, b, t).unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

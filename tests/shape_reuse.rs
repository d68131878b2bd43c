//! Buffers reused across shapes hold no state: a forward/backward pass at (B, T) after passes
//! at other shapes gives exactly what a fresh model gives at (B, T), on the CPU and on the
//! emulated kernels (activations, backward scratch and gradients are sized once and resized
//! within capacity, issue 16).

use gepa_dapo_grn::backend::cpu::CpuBackend;
use gepa_dapo_grn::backend::kernel::EmuBackend;
use gepa_dapo_grn::backend::Backend;
use gepa_dapo_grn::model::{Gpt2, Gpt2Config};
use gepa_dapo_grn::util::rng::Rng;

fn batch(rng: &mut Rng, b: usize, t: usize, v: usize) -> (Vec<u32>, Vec<u32>, Vec<f32>) {
    let ids = (0..b * t).map(|_| rng.below(v) as u32).collect();
    let tg = (0..b * t).map(|_| rng.below(v) as u32).collect();
    (ids, tg, vec![1.0 / (b * t) as f32; b * t])
}

fn check<K: Backend + Clone>(k: K) {
    let cfg = Gpt2Config::named("tiny", 97).unwrap();
    let mut rng = Rng::new(4);
    let shapes = [(3usize, 9usize), (2, 5), (4, 12), (1, 3), (2, 5)];
    let data: Vec<_> = shapes.iter().map(|&(b, t)| batch(&mut rng, b, t, 97)).collect();
    let mut reused = Gpt2::random(k.clone(), cfg.clone(), 1).unwrap();
    for (i, (&(b, t), (ids, tg, w))) in shapes.iter().zip(&data).enumerate() {
        reused.zero_grad();
        let loss = reused.forward_backward(ids, tg, w, b, t).unwrap();
        let mut fresh = Gpt2::random(k.clone(), cfg.clone(), 1).unwrap();
        fresh.zero_grad();
        let want = fresh.forward_backward(ids, tg, w, b, t).unwrap();
        assert_eq!(loss.to_bits(), want.to_bits(), "pass {i} at B={b} T={t}: loss {loss} vs fresh {want}");
        for s in reused.specs().to_vec() {
            assert_eq!(reused.grad(&s.name), fresh.grad(&s.name), "pass {i} at B={b} T={t}: gradient of {}", s.name);
        }
    }
}

#[test]
fn cpu_passes_do_not_depend_on_earlier_shapes() {
    check(CpuBackend::new(Some(1)));
}

#[test]
fn emulated_passes_do_not_depend_on_earlier_shapes() {
    check(EmuBackend::emulated());
}

//! `Gpt2::forward_hidden` / `forward_backward_with`: a custom head on the hidden state. A head
//! that recomputes the model's own lm_head and cross-entropy must reproduce `forward_backward`
//! exactly (same ops, same order on the CPU), so the split at the hidden state loses nothing.

use gepa_dapo_grn::backend::cpu::CpuBackend;
use gepa_dapo_grn::backend::prelude::*;
use gepa_dapo_grn::backend::CrossEntropyShape;
use gepa_dapo_grn::backend::Gemm;
use gepa_dapo_grn::model::{mean_weights, Gpt2, Gpt2Config};
use gepa_dapo_grn::util::rng::Rng;

fn model() -> Gpt2<CpuBackend> {
    let cfg = Gpt2Config::named("tiny", 37).unwrap();
    Gpt2::random(CpuBackend::new(Some(2)), cfg, 5).unwrap()
}

#[test]
fn a_head_recomputing_the_lm_head_matches_forward_backward_bit_for_bit() {
    let (b, t) = (2usize, 9usize);
    let mut rng = Rng::new(1);
    let ids: Vec<u32> = (0..b * t).map(|_| rng.below(37) as u32).collect();
    let targets: Vec<u32> = (0..b * t).map(|_| rng.below(37) as u32).collect();
    let weights = mean_weights(&(0..b * t).map(|i| i % 3 != 0).collect::<Vec<_>>());

    let mut reference = model();
    let want_loss = reference.forward_backward(&ids, &targets, &weights, b, t).unwrap();

    let mut m = model();
    let (v, c) = (m.config().vocab_size, m.config().n_embd);
    let n = b * t;
    let loss = m
        .forward_backward_with(&ids, b, t, |h| {
            let k = h.backend;
            let mut logits = k.alloc(n * v);
            k.matmul(&mut logits, h.hidden, h.wte, None, Gemm::nt(n, v, c));
            let (mut losses, tg, w) = (k.alloc(n), k.upload_ids(&targets), k.upload(&weights));
            k.cross_entropy(&mut logits, &mut losses, &tg, &w, CrossEntropyShape { n, v }, true);
            k.matmul(h.dwte, &logits, h.hidden, None, Gemm::tn(v, c, n).acc());
            k.matmul(h.dhidden, &logits, h.wte, None, Gemm::nn(n, c, v));
            Ok(k.download(&losses).iter().map(|&x| x as f64).sum::<f64>() as f32)
        })
        .unwrap();
    assert_eq!(loss.to_bits(), want_loss.to_bits());
    for spec in reference.specs() {
        let (got, want) = (m.grad(&spec.name).unwrap(), reference.grad(&spec.name).unwrap());
        assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "gradient of {} differs", spec.name);
    }

    // forward_hidden sees the same hidden state the head above used: its lm_head product
    // equals the full forward's logits.
    let hidden_logits = m
        .forward_hidden(&ids, b, t, |h| {
            let mut logits = h.backend.alloc(n * v);
            h.backend.matmul(&mut logits, h.hidden, h.wte, None, Gemm::nt(n, v, c));
            h.backend.download(&logits)
        })
        .unwrap();
    m.forward(&ids, b, t).unwrap();
    assert_eq!(hidden_logits, m.logits().unwrap());
}

#[test]
fn a_failing_head_leaves_the_gradients_alone() {
    let mut m = model();
    m.zero_grad();
    let err = m
        .forward_backward_with(&[1, 2, 3], 1, 3, |_| -> gepa_dapo_grn::error::Result<()> {
            Err(gepa_dapo_grn::error::Error::Invalid("head refused".into()))
        })
        .unwrap_err();
    assert!(err.to_string().contains("head refused"));
    let specs: Vec<String> = m.specs().iter().map(|s| s.name.clone()).collect();
    for name in specs {
        assert!(m.grad(&name).unwrap().iter().all(|&g| g == 0.0), "{name} changed");
    }
}

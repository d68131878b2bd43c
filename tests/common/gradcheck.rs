//! Finite-difference checks of each op's backward against its forward, on tiny shapes.
//!
//! Method: for a random projection r, L(x) = Σ r·f(x). The analytic gradient is the op's
//! backward with dout = r; the numeric one is the central difference (L(x+h) − L(x−h))/2h
//! in f32 with h = 1e-2 on a few coordinates of each input. The ops are smooth, so the
//! O(h²) truncation error is ~1e-4 relative and f32 rounding of L (~1e-7·|L|/h) stays below
//! 1e-4 for these sizes: a tolerance of 2e-2 relative (plus 2e-3 absolute) catches any wrong
//! index or missing term, which produce O(1) errors.

use super::Precision;
use super::{dot, randn};
use gepa_dapo_grn::backend::{
    Affine, AttentionShape, Btc, CrossEntropyShape, GrnCausalStats, GrnParams, GrnSeqStats, LayerNormShape, LnStats,
    Masked,
};
use gepa_dapo_grn::backend::{Backend, Gemm, GrnShape};
use gepa_dapo_grn::util::rng::Rng;

const H: f32 = 1e-2;

fn check(what: &str, analytic: f32, numeric: f64) {
    let (a, n) = (analytic as f64, numeric);
    assert!((a - n).abs() <= 2e-3 + 2e-2 * n.abs().max(a.abs()), "{what}: analytic {a:.6} vs numeric {n:.6}");
}

/// Probes `samples` coordinates of `x`, comparing `grad` with central differences of `loss`.
fn probe(what: &str, x: &mut [f32], grad: &[f32], samples: usize, rng: &mut Rng, loss: impl FnMut(&[f32]) -> f64) {
    probe_with_step(what, x, grad, (samples, H), rng, loss)
}

/// [`probe`] with step `h` instead of [`H`].
fn probe_with_step(
    what: &str,
    x: &mut [f32],
    grad: &[f32],
    (samples, h): (usize, f32),
    rng: &mut Rng,
    mut loss: impl FnMut(&[f32]) -> f64,
) {
    for _ in 0..samples {
        let i = rng.below(x.len());
        let orig = x[i];
        x[i] = orig + h;
        let lp = loss(x);
        x[i] = orig - h;
        let lm = loss(x);
        x[i] = orig;
        check(&format!("{what}[{i}]"), grad[i], (lp - lm) / (2.0 * h as f64));
    }
}

/// Layer norm: input, weight and bias gradients.
pub fn layernorm<K: Backend>(k: K, _prec: Precision) {
    let (n, c) = (5, 12);
    let mut rng = Rng::new(11);
    let mut x = randn(&mut rng, n * c, 1.0);
    let mut w: Vec<f32> = randn(&mut rng, c, 0.3).iter().map(|v| v + 1.0).collect();
    let mut b = randn(&mut rng, c, 0.3);
    let r = randn(&mut rng, n * c, 1.0);
    let fwd = |x: &[f32], w: &[f32], b: &[f32]| {
        let (mut out, mut mean, mut rstd) = (k.alloc(n * c), k.alloc(n), k.alloc(n));
        k.layernorm_forward(
            &mut out,
            LnStats { mean: &mut mean, rstd: &mut rstd },
            &k.upload(x),
            Affine { w: &k.upload(w), b: &k.upload(b) },
            LayerNormShape { n, c, eps: 1e-5 },
        );
        (k.download(&out), mean, rstd)
    };
    let (_, mean, rstd) = fwd(&x, &w, &b);
    let (mut dx, mut dw, mut db) = (k.alloc(n * c), k.alloc(c), k.alloc(c));
    k.layernorm_backward(
        &mut dx,
        Affine { w: &mut dw, b: &mut db },
        &k.upload(&r),
        &k.upload(&x),
        &k.upload(&w),
        LnStats { mean: &mean, rstd: &rstd },
        LayerNormShape { n, c, eps: 0.0 },
    );
    let (dx, dw, db) = (k.download(&dx), k.download(&dw), k.download(&db));
    let (w0, b0, x0) = (w.clone(), b.clone(), x.clone());
    probe("layernorm dx", &mut x, &dx, 12, &mut rng, |x| dot(&fwd(x, &w0, &b0).0, &r));
    probe("layernorm dw", &mut w, &dw, 6, &mut rng, |w| dot(&fwd(&x0, w, &b0).0, &r));
    probe("layernorm db", &mut b, &db, 6, &mut rng, |b| dot(&fwd(&x0, &w0, b).0, &r));
}

/// Causal attention: gradient of qkv, with T not a power of two and several heads.
pub fn attention<K: Backend>(k: K, _prec: Precision) {
    let (b, t, nh, c) = (2, 5, 3, 12);
    let mut rng = Rng::new(12);
    let mut qkv = randn(&mut rng, b * t * 3 * c, 1.0);
    let r = randn(&mut rng, b * t * c, 1.0);
    let fwd = |qkv: &[f32]| {
        let (mut out, mut lse) = (k.alloc(b * t * c), k.alloc(b * nh * t));
        k.attention_forward(&mut out, &mut lse, &k.upload(qkv), AttentionShape { b, t, nh, c });
        (out, lse)
    };
    let (out, lse) = fwd(&qkv);
    let mut dqkv = k.upload(&vec![f32::NAN; b * t * 3 * c]);
    k.attention_backward(&mut dqkv, &k.upload(&r), &k.upload(&qkv), &out, &lse, AttentionShape { b, t, nh, c });
    let dqkv = k.download(&dqkv);
    probe("attention dqkv", &mut qkv, &dqkv, 40, &mut rng, |x| dot(&k.download(&fwd(x).0), &r));
    // Causality: the output at t=0 attends only to itself, so it equals v at t=0.
    let (out, _) = fwd(&qkv);
    let out = k.download(&out);
    for j in 0..c {
        assert!((out[j] - qkv[2 * c + j]).abs() < 1e-6, "out[0] must equal v[0]");
    }
}

/// GELU (tanh form).
pub fn gelu<K: Backend>(k: K, _prec: Precision) {
    let n = 64;
    let mut rng = Rng::new(13);
    let mut x = randn(&mut rng, n, 2.0);
    let r = randn(&mut rng, n, 1.0);
    let fwd = |x: &[f32]| {
        let mut out = k.alloc(n);
        k.gelu_forward(&mut out, &k.upload(x));
        k.download(&out)
    };
    let mut d = k.upload(&r);
    k.gelu_backward(&mut d, &k.upload(&x));
    let d = k.download(&d);
    probe("gelu", &mut x, &d, 20, &mut rng, |x| dot(&fwd(x), &r));
    // A known value: gelu_new(1) = 0.841192 (tanh approximation).
    let one = fwd(&[1.0; 64])[0];
    assert!((one - 0.841_192).abs() < 1e-5, "gelu(1) = {one}");
}

/// Weighted cross-entropy: gradient of the logits, and the loss value itself.
pub fn cross_entropy<K: Backend>(k: K, _prec: Precision) {
    let (n, v) = (4, 7);
    let mut rng = Rng::new(14);
    let mut logits = randn(&mut rng, n * v, 2.0);
    let targets: Vec<u32> = vec![0, 6, 3, 3];
    let weights = vec![0.5, 0.25, 0.0, 0.25];
    let loss = |l: &[f32]| {
        let mut lb = k.upload(l);
        let mut losses = k.alloc(n);
        k.cross_entropy(
            &mut lb,
            &mut losses,
            &k.upload_ids(&targets),
            &k.upload(&weights),
            CrossEntropyShape { n, v },
            false,
        );
        assert_eq!(k.download(&lb), l, "forward-only must leave logits untouched");
        k.download(&losses).iter().map(|&x| x as f64).sum::<f64>()
    };
    let mut lb = k.upload(&logits);
    let mut losses = k.alloc(n);
    k.cross_entropy(
        &mut lb,
        &mut losses,
        &k.upload_ids(&targets),
        &k.upload(&weights),
        CrossEntropyShape { n, v },
        true,
    );
    let grad = k.download(&lb);
    // Reference loss in f64 from the definition.
    let mut want = 0.0f64;
    for i in 0..n {
        let row = &logits[i * v..(i + 1) * v];
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
        let lse = max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
        want += weights[i] as f64 * (lse - row[targets[i] as usize] as f64);
    }
    let got = k.download(&losses).iter().map(|&x| x as f64).sum::<f64>();
    assert!((got - want).abs() < 1e-5 * want.abs(), "loss {got} vs {want}");
    assert!(grad[2 * v..3 * v].iter().all(|&g| g == 0.0), "zero-weight row has zero gradient");
    probe("cross_entropy", &mut logits, &grad, 20, &mut rng, loss);
}

/// Matmul with bias, every transpose: gradients of both operands and the bias.
pub fn matmul<K: Backend>(k: K, prec: Precision) {
    let (m, n, kk) = (3, 5, 4);
    let mut rng = Rng::new(15);
    let mut a = randn(&mut rng, m * kk, 1.0);
    let mut b = randn(&mut rng, kk * n, 1.0);
    let mut bias = randn(&mut rng, n, 1.0);
    let r = randn(&mut rng, m * n, 1.0);
    let fwd = |a: &[f32], b: &[f32], bias: &[f32]| {
        let mut out = k.alloc(m * n);
        k.matmul(&mut out, &k.upload(a), &k.upload(b), Some(&k.upload(bias)), Gemm::nn(m, n, kk));
        k.download(&out)
    };
    // dA = r·bᵀ, dB = aᵀ·r, dbias = Σ_rows r — the same products the model's backward uses.
    let (mut da, mut db, mut dbias) = (k.alloc(m * kk), k.alloc(kk * n), k.alloc(n));
    k.matmul(&mut da, &k.upload(&r), &k.upload(&b), None, Gemm::nt(m, kk, n));
    k.matmul(&mut db, &k.upload(&a), &k.upload(&r), None, Gemm::tn(kk, n, m));
    k.bias_backward(&mut dbias, &k.upload(&r), m, n);
    let (da, db, dbias) = (k.download(&da), k.download(&db), k.download(&dbias));
    let (a0, b0, bias0) = (a.clone(), b.clone(), bias.clone());
    // The product is linear, so a large step costs no truncation error; under TF32 it must be
    // large, because each forward carries ~2⁻¹¹ relative rounding per operand (~1e-3 on the
    // loss here), which a step of 1e-2 would blow up to ~0.1 in the quotient.
    let h = prec.pick(H, 0.5);
    probe_with_step("matmul da", &mut a, &da, (8, h), &mut rng, |a| dot(&fwd(a, &b0, &bias0), &r));
    probe_with_step("matmul db", &mut b, &db, (8, h), &mut rng, |b| dot(&fwd(&a0, b, &bias0), &r));
    probe_with_step("matmul dbias", &mut bias, &dbias, (5, h), &mut rng, |bias| dot(&fwd(&a0, &b0, bias), &r));
}

/// Token + position embedding: gradients land on the rows that were looked up, summed for
/// repeated tokens.
pub fn encoder<K: Backend>(k: K, _prec: Precision) {
    let (b, t, c, v) = (2, 3, 4, 6);
    let mut rng = Rng::new(16);
    let mut wte = randn(&mut rng, v * c, 1.0);
    let mut wpe = randn(&mut rng, t * c, 1.0);
    let ids: Vec<u32> = vec![1, 5, 1, 0, 1, 2];
    let r = randn(&mut rng, b * t * c, 1.0);
    let fwd = |wte: &[f32], wpe: &[f32]| {
        let mut out = k.alloc(b * t * c);
        k.encoder_forward(&mut out, &k.upload_ids(&ids), &k.upload(wte), &k.upload(wpe), Btc { b, t, c });
        k.download(&out)
    };
    let (mut dwte, mut dwpe) = (k.alloc(v * c), k.alloc(t * c));
    k.encoder_backward(&mut dwte, &mut dwpe, &k.upload(&r), &k.upload_ids(&ids), Btc { b, t, c });
    let (dwte, dwpe) = (k.download(&dwte), k.download(&dwpe));
    assert!(dwte[3 * c..5 * c].iter().all(|&g| g == 0.0), "unused tokens get no gradient");
    let wpe0 = wpe.clone();
    probe("encoder dwte", &mut wte, &dwte, 12, &mut rng, |w| dot(&fwd(w, &wpe0), &r));
    let wte0 = wte.clone();
    probe("encoder dwpe", &mut wpe, &dwpe, 8, &mut rng, |p| dot(&fwd(&wte0, p), &r));
}

/// Causal GRN: input, γ and β gradients, with γ, β non-zero and T long enough that the
/// suffix sums of the backward matter; every coordinate of x is probed.
pub fn grn_causal<K: Backend>(k: K, _prec: Precision) {
    let (b, t, c) = (2, 5, 6);
    let gs = GrnShape { b, t, c, eps: 1e-6 };
    let mut rng = Rng::new(17);
    let mut x = randn(&mut rng, b * t * c, 1.0);
    let mut gamma = randn(&mut rng, c, 0.7);
    let mut beta = randn(&mut rng, c, 0.7);
    let r = randn(&mut rng, b * t * c, 1.0);
    let fwd = |x: &[f32], gamma: &[f32], beta: &[f32]| {
        let (mut out, mut g, mut mean) = (k.alloc(b * t * c), k.alloc(b * t * c), k.alloc(b * t));
        k.grn_causal_forward(
            &mut out,
            GrnCausalStats { g: &mut g, mean: &mut mean },
            &k.upload(x),
            GrnParams { gamma: &k.upload(gamma), beta: &k.upload(beta) },
            gs,
        );
        (k.download(&out), g, mean)
    };
    let (_, g, mean) = fwd(&x, &gamma, &beta);
    let (mut dx, mut dgamma, mut dbeta) = (k.alloc(b * t * c), k.alloc(c), k.alloc(c));
    let (ux, ug) = (k.upload(&x), k.upload(&gamma));
    k.grn_causal_backward(
        &mut dx,
        GrnParams { gamma: &mut dgamma, beta: &mut dbeta },
        &k.upload(&r),
        &ux,
        &ug,
        GrnCausalStats { g: &g, mean: &mean },
        gs,
    );
    let (dx, dgamma, dbeta) = (k.download(&dx), k.download(&dgamma), k.download(&dbeta));
    let (x0, g0, b0) = (x.clone(), gamma.clone(), beta.clone());
    probe("grn_causal dx", &mut x, &dx, 24, &mut rng, |x| dot(&fwd(x, &g0, &b0).0, &r));
    probe("grn_causal dgamma", &mut gamma, &dgamma, 6, &mut rng, |gm| dot(&fwd(&x0, gm, &b0).0, &r));
    probe("grn_causal dbeta", &mut beta, &dbeta, 6, &mut rng, |bt| dot(&fwd(&x0, &g0, bt).0, &r));
}

/// Sequence-wide GRN under a ragged mask: input, γ and β gradients.
pub fn grn_sequence<K: Backend>(k: K, _prec: Precision) {
    let (b, t, c) = (2, 4, 5);
    let gs = GrnShape { b, t, c, eps: 1e-6 };
    let mut rng = Rng::new(18);
    let mut x = randn(&mut rng, b * t * c, 1.0);
    let mut gamma = randn(&mut rng, c, 0.7);
    let mut beta = randn(&mut rng, c, 0.7);
    let mask = [1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0];
    let r = randn(&mut rng, b * t * c, 1.0);
    let um = k.upload(&mask);
    let fwd = |x: &[f32], gamma: &[f32], beta: &[f32]| {
        let (mut out, mut g, mut mean, mut n) = (k.alloc(b * t * c), k.alloc(b * c), k.alloc(b), k.alloc(b * c));
        let (ux, ug, ub) = (k.upload(x), k.upload(gamma), k.upload(beta));
        k.grn_sequence_forward(
            &mut out,
            GrnSeqStats { g: &mut g, mean: &mut mean, n: &mut n },
            Masked { x: &ux, mask: &um },
            GrnParams { gamma: &ug, beta: &ub },
            gs,
        );
        (k.download(&out), g, mean, n)
    };
    let (_, g, mean, n) = fwd(&x, &gamma, &beta);
    let (mut dx, mut dgamma, mut dbeta) = (k.alloc(b * t * c), k.alloc(c), k.alloc(c));
    let (ux, ug, ur) = (k.upload(&x), k.upload(&gamma), k.upload(&r));
    k.grn_sequence_backward(
        &mut dx,
        GrnParams { gamma: &mut dgamma, beta: &mut dbeta },
        &ur,
        Masked { x: &ux, mask: &um },
        &ug,
        GrnSeqStats { g: &g, mean: &mean, n: &n },
        gs,
    );
    let (dx, dgamma, dbeta) = (k.download(&dx), k.download(&dgamma), k.download(&dbeta));
    let (x0, g0, b0) = (x.clone(), gamma.clone(), beta.clone());
    probe("grn_sequence dx", &mut x, &dx, 16, &mut rng, |x| dot(&fwd(x, &g0, &b0).0, &r));
    probe("grn_sequence dgamma", &mut gamma, &dgamma, 5, &mut rng, |gm| dot(&fwd(&x0, gm, &b0).0, &r));
    probe("grn_sequence dbeta", &mut beta, &dbeta, 5, &mut rng, |bt| dot(&fwd(&x0, &g0, bt).0, &r));
}

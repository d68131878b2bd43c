//! GRN over the sequence axis: a hand-computed example, exact identity at zero init, padding
//! isolation, and finite-difference checks of every gradient, alone and inside a scalar head.
//!
//! Finite differences: L = Σ r·y (or a value-head loss) is evaluated in f64 from the f32
//! outputs; central differences with h = 1e-3 have O(h²) ≈ 1e-6 truncation error, and f32
//! rounding of the ~60 outputs adds ≈ 1e-7·√60/h ≈ 1e-3 at worst, so a tolerance of 2e-3
//! absolute plus 1e-2 relative passes a correct backward while any wrong index, sign or
//! missing term (through G or through the mean) is off by O(0.1) or more.

use gepa_dapo_grn::backend::{GrnParams, GrnSeqStats, GrnShape, Masked};
use gepa_dapo_grn::model::grn::{
    grn_sequence_backward, grn_sequence_forward, maybe_apply_grn, Grn, GrnConfig, Head, GRN_EPS,
};
use gepa_dapo_grn::util::rng::Rng;

const H: f32 = 1e-3;

fn randn(rng: &mut Rng, n: usize, std: f32) -> Vec<f32> {
    (0..n).map(|_| rng.normal() * std).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Asserts `a` and `b` are the same bits, naming the first position that differs.
fn assert_same_bits(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    if let Some(i) = (0..a.len()).find(|&i| a[i].to_bits() != b[i].to_bits()) {
        panic!(
            "{what}: first difference at {i}: {:e} ({:#010x}) vs {:e} ({:#010x})",
            a[i],
            a[i].to_bits(),
            b[i],
            b[i].to_bits()
        );
    }
}

/// Compares `grad` with central differences of `loss` at every coordinate of `x`.
fn fd_check(what: &str, x: &mut [f32], grad: &[f32], mut loss: impl FnMut(&[f32]) -> f64) {
    assert_eq!(x.len(), grad.len(), "{what}: gradient length");
    for i in 0..x.len() {
        let orig = x[i];
        let (xp, xm) = (orig + H, orig - H);
        x[i] = xp;
        let lp = loss(x);
        x[i] = xm;
        let lm = loss(x);
        x[i] = orig;
        // Divide by the step actually taken in f32, not the nominal 2h.
        let numeric = (lp - lm) / (xp as f64 - xm as f64);
        let a = grad[i] as f64;
        assert!(
            (a - numeric).abs() <= 2e-3 + 1e-2 * numeric.abs().max(a.abs()),
            "{what}[{i}]: analytic {a:.6} vs numeric {numeric:.6}"
        );
    }
}

/// B=2, T=5, C=6; the second sequence is padded after three tokens.
const B: usize = 2;
const T: usize = 5;
const C: usize = 6;
const RAGGED: [f32; B * T] = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0];

fn trained_grn(rng: &mut Rng, c: usize) -> Grn {
    let gamma = randn(rng, c, 0.8);
    let beta = randn(rng, c, 0.5);
    Grn::from_params(Head::Value, gamma, beta, GRN_EPS).unwrap()
}

/// dx, dγ, dβ of Σ r·GRN(x) against finite differences, for a given mask.
fn gradcheck_with_mask(mask: &[f32], b: usize, t: usize, c: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut grn = trained_grn(&mut rng, c);
    let mut x = randn(&mut rng, b * t * c, 1.0);
    let r = randn(&mut rng, b * t * c, 1.0);
    let mut y = vec![0.0; x.len()];
    grn.forward(&mut y, &x, mask, b, t, c);
    // dx is overwritten (NaN would survive otherwise); dγ, dβ accumulate onto what is there.
    let mut dx = vec![f32::NAN; x.len()];
    grn.dgamma.fill(0.25);
    grn.dbeta.fill(-0.5);
    grn.backward(&mut dx, &r, &x, mask, b, t, c);
    let dgamma: Vec<f32> = grn.dgamma.iter().map(|v| v - 0.25).collect();
    let dbeta: Vec<f32> = grn.dbeta.iter().map(|v| v + 0.5).collect();
    assert!(dx.iter().all(|v| v.is_finite()), "dx must be fully overwritten");
    // Padding positions: y = x there, so their gradient is dy exactly.
    for (bt, &m) in mask.iter().enumerate() {
        if m == 0.0 {
            assert_same_bits(&dx[bt * c..(bt + 1) * c], &r[bt * c..(bt + 1) * c], &format!("dx at padding {bt}"));
        }
    }
    let (gamma, beta) = (grn.gamma.clone(), grn.beta.clone());
    let loss = |x: &[f32], gamma: &[f32], beta: &[f32]| {
        let g = Grn::from_params(Head::Value, gamma.to_vec(), beta.to_vec(), GRN_EPS).unwrap();
        dot(&g.apply(x, mask, b, t, c), &r)
    };
    let x0 = x.clone();
    fd_check("dx", &mut x, &dx, |x| loss(x, &gamma, &beta));
    fd_check("dgamma", &mut gamma.clone(), &dgamma, |g| loss(&x0, g, &beta));
    fd_check("dbeta", &mut beta.clone(), &dbeta, |bt| loss(&x0, &gamma, bt));
}

#[test]
fn gradients_match_finite_differences_ragged() {
    gradcheck_with_mask(&RAGGED, B, T, C, 1);
}

#[test]
fn gradients_match_finite_differences_interior_padding_and_empty_row() {
    // Left and interior padding, and a sequence with no real token at all.
    let mask = [0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0];
    gradcheck_with_mask(&mask, 3, 5, 4, 2);
}

#[test]
fn backward_accumulates_parameter_gradients() {
    let mut rng = Rng::new(3);
    let mut grn = trained_grn(&mut rng, C);
    let x = randn(&mut rng, B * T * C, 1.0);
    let r = randn(&mut rng, B * T * C, 1.0);
    let (mut y, mut dx) = (vec![0.0; x.len()], vec![0.0; x.len()]);
    grn.forward(&mut y, &x, &RAGGED, B, T, C);
    grn.backward(&mut dx, &r, &x, &RAGGED, B, T, C);
    let (g1, b1) = (grn.dgamma.clone(), grn.dbeta.clone());
    grn.backward(&mut dx, &r, &x, &RAGGED, B, T, C);
    for j in 0..C {
        assert_eq!(grn.dgamma[j], 2.0 * g1[j]);
        assert_eq!(grn.dbeta[j], 2.0 * b1[j]);
    }
}

#[test]
fn hand_computed_tiny_example() {
    // x = [[1, 2], [3, 4]] (T=2, C=2), both positions real, eps = 0:
    // G = (√10, √20) = √10·(1, √2); μ = √10·(1 + √2)/2;
    // N = (2/(1+√2), 2√2/(1+√2)) = (2(√2 − 1), 2(2 − √2)).
    // With γ = (0.5, −1), β = (0.1, 0.2), y = x + γ·x·N + β:
    // y[0,0] = 1 + 0.5·1·2(√2−1) + 0.1 = √2 + 0.1
    // y[0,1] = 2 − 1·2·2(2−√2) + 0.2 = 4√2 − 5.8
    // y[1,0] = 3 + 0.5·3·2(√2−1) + 0.1 = 3√2 + 0.1
    // y[1,1] = 4 − 1·4·2(2−√2) + 0.2 = 8√2 − 11.8
    let s2 = std::f64::consts::SQRT_2;
    let x = [1.0, 2.0, 3.0, 4.0];
    let mask = [1.0, 1.0];
    let mut grn = Grn::from_params(Head::Value, vec![0.5, -1.0], vec![0.1, 0.2], 0.0).unwrap();
    let mut y = [0.0; 4];
    grn.forward(&mut y, &x, &mask, 1, 2, 2);
    let want = [s2 + 0.1, 4.0 * s2 - 5.8, 3.0 * s2 + 0.1, 8.0 * s2 - 11.8];
    for (i, (&got, &w)) in y.iter().zip(&want).enumerate() {
        assert!((got as f64 - w).abs() < 1e-6, "y[{i}] = {got}, want {w}");
    }
    let st = grn.stats();
    let want_g = [10f64.sqrt(), 20f64.sqrt()];
    let want_n = [2.0 * (s2 - 1.0), 2.0 * (2.0 - s2)];
    for j in 0..2 {
        assert!((st.g[j] as f64 - want_g[j]).abs() < 1e-6);
        assert!((st.n[j] as f64 - want_n[j]).abs() < 1e-6);
    }
    assert!((st.mean[0] as f64 - 10f64.sqrt() * (1.0 + s2) / 2.0).abs() < 1e-6);

    // The same with the default eps: N shrinks by μ/(μ + eps), i.e. within 1e-6 of the above.
    let mut grn = Grn::from_params(Head::Value, vec![0.5, -1.0], vec![0.1, 0.2], GRN_EPS).unwrap();
    grn.forward(&mut y, &x, &mask, 1, 2, 2);
    let mu = 10f64.sqrt() * (1.0 + s2) / 2.0;
    let n = [10f64.sqrt() / (mu + 1e-6), 20f64.sqrt() / (mu + 1e-6)];
    let want = [1.0 + 0.5 * n[0] + 0.1, 2.0 - 2.0 * n[1] + 0.2, 3.0 + 1.5 * n[0] + 0.1, 4.0 - 4.0 * n[1] + 0.2];
    for (i, (&got, &w)) in y.iter().zip(&want).enumerate() {
        assert!((got as f64 - w).abs() < 1e-6, "eps: y[{i}] = {got}, want {w}");
    }

    // Padding a third position in between changes nothing at the real ones and leaves the pad.
    let xp = [1.0, 2.0, 100.0, -50.0, 3.0, 4.0];
    let yp = grn.apply(&xp, &[1.0, 0.0, 1.0], 1, 3, 2);
    assert_eq!(bits(&[yp[0], yp[1], yp[4], yp[5]]), bits(&y));
    assert_eq!(&yp[2..4], &[100.0, -50.0]);
}

#[test]
fn zero_init_is_bit_identical() {
    let mut rng = Rng::new(4);
    let (b, t, c) = (3, 7, 33);
    let mut x = randn(&mut rng, b * t * c, 2.0);
    // Values that a careless `x + 0` or an overflowing f32 norm would disturb.
    let special = [-0.0, 0.0, 1e-40, -1e-40, 1e30, -1e30, 3.0e38, f32::MIN_POSITIVE, -7.25];
    x[..special.len()].copy_from_slice(&special);
    x[4 * c + 5] = -0.0;
    let mask: Vec<f32> = (0..b * t).map(|i| if i % 7 < 5 || i < 7 { 1.0 } else { 0.0 }).collect();
    let cfg = GrnConfig { enabled: true, ..GrnConfig::default() };
    for head in [Head::Policy, Head::Value] {
        let mut grn = maybe_apply_grn(&cfg, head, c).expect("enabled for both heads by default");
        assert!(grn.is_identity());
        let mut y = vec![f32::NAN; x.len()];
        grn.forward(&mut y, &x, &mask, b, t, c);
        assert_same_bits(&y, &x, &format!("{head:?}: forward at zero init must be the identity"));
        assert_same_bits(&grn.apply(&x, &mask, b, t, c), &x, &format!("{head:?}: apply at zero init"));
    }
}

#[test]
fn zero_init_still_learns() {
    // At γ = β = 0 the output is x, dx is dy, yet dγ and dβ are non-zero: GRN can start learning.
    let mut rng = Rng::new(5);
    let mut grn = Grn::new(Head::Value, C, GRN_EPS);
    let x = randn(&mut rng, B * T * C, 1.0);
    let r = randn(&mut rng, B * T * C, 1.0);
    let (mut y, mut dx) = (vec![0.0; x.len()], vec![0.0; x.len()]);
    grn.forward(&mut y, &x, &RAGGED, B, T, C);
    grn.backward(&mut dx, &r, &x, &RAGGED, B, T, C);
    assert_eq!(dx, r);
    assert!(grn.dgamma.iter().all(|v| *v != 0.0) && grn.dbeta.iter().all(|v| *v != 0.0));
}

#[test]
fn padding_values_do_not_reach_real_outputs() {
    let mut rng = Rng::new(6);
    let mut grn = trained_grn(&mut rng, C);
    let x = randn(&mut rng, B * T * C, 1.0);
    let r = randn(&mut rng, B * T * C, 1.0);
    let mut x2 = x.clone();
    // Sequence 1, positions 3 and 4 are padding: overwrite them with large values.
    for v in &mut x2[(T + 3) * C..2 * T * C] {
        *v = 1e3 * rng.normal();
    }
    let run = |grn: &mut Grn, x: &[f32]| {
        let (mut y, mut dx) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        grn.zero_grad();
        grn.forward(&mut y, x, &RAGGED, B, T, C);
        grn.backward(&mut dx, &r, x, &RAGGED, B, T, C);
        (y, dx, grn.dgamma.clone(), grn.dbeta.clone(), grn.stats().clone())
    };
    let (y1, dx1, dg1, db1, st1) = run(&mut grn, &x);
    let (y2, dx2, dg2, db2, st2) = run(&mut grn, &x2);
    let real = (T + 3) * C;
    assert_same_bits(&y1[..real], &y2[..real], "real outputs must not see padding");
    assert_same_bits(&y2[real..], &x2[real..], "padding passes through");
    assert_same_bits(&dx1[..real], &dx2[..real], "dx at real positions");
    assert_same_bits(&dg1, &dg2, "dgamma");
    assert_same_bits(&db1, &db2, "dbeta");
    assert_eq!(st1, st2);
}

#[test]
fn free_functions_match_the_layer_and_are_thread_count_independent() {
    let mut rng = Rng::new(7);
    let (b, t, c) = (4, 9, 70);
    let mut grn = trained_grn(&mut rng, c);
    let x = randn(&mut rng, b * t * c, 1.0);
    let r = randn(&mut rng, b * t * c, 1.0);
    let mask: Vec<f32> = (0..b * t).map(|i| if i % t <= i / t + 4 { 1.0 } else { 0.0 }).collect();
    let run = || {
        let (mut y, mut g, mut mean, mut n) = (vec![0.0; x.len()], vec![0.0; b * c], vec![0.0; b], vec![0.0; b * c]);
        let stats = GrnSeqStats { g: &mut g[..], mean: &mut mean[..], n: &mut n[..] };
        let (p, s) = (GrnParams { gamma: &grn.gamma[..], beta: &grn.beta[..] }, GrnShape { b, t, c, eps: GRN_EPS });
        grn_sequence_forward(&mut y, stats, Masked { x: &x[..], mask: &mask[..] }, p, s);
        let (mut dx, mut dg, mut db) = (vec![0.0; x.len()], vec![0.0; c], vec![0.0; c]);
        let dp = GrnParams { gamma: &mut dg[..], beta: &mut db[..] };
        let stats = GrnSeqStats { g: &g[..], mean: &mean[..], n: &n[..] };
        grn_sequence_backward(&mut dx, dp, &r, Masked { x: &x[..], mask: &mask[..] }, &grn.gamma, stats, s);
        [y, dx, dg, db].map(|v| bits(&v))
    };
    let many = run();
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(run);
    assert_eq!(many, one);
    let mut y = vec![0.0; x.len()];
    grn.forward(&mut y, &x, &mask, b, t, c);
    let mut dx = vec![0.0; x.len()];
    grn.backward(&mut dx, &r, &x, &mask, b, t, c);
    assert_eq!([bits(&y), bits(&dx), bits(&grn.dgamma), bits(&grn.dbeta)], many);
}

/// A scalar value head on GRN'd hidden states: v_b = w · mean_{real t} GRN(x)[b,t,:], with the
/// loss ½Σ_b (v_b − z_b)².
fn value_head_loss(grn: &Grn, w: &[f32], x: &[f32], z: &[f32]) -> f64 {
    let h = grn.apply(x, &RAGGED, B, T, C);
    (0..B)
        .map(|b| {
            let real: Vec<usize> = (0..T).filter(|&t| RAGGED[b * T + t] != 0.0).collect();
            let v: f64 =
                real.iter().map(|&t| dot(&h[(b * T + t) * C..(b * T + t + 1) * C], w)).sum::<f64>() / real.len() as f64;
            0.5 * (v - z[b] as f64).powi(2)
        })
        .sum()
}

#[test]
fn value_head_gradients_match_finite_differences() {
    let mut rng = Rng::new(8);
    let cfg = GrnConfig { enabled: true, apply_to_policy: false, ..GrnConfig::default() };
    assert!(maybe_apply_grn(&cfg, Head::Policy, C).is_none());
    let mut grn = maybe_apply_grn(&cfg, Head::Value, C).unwrap();
    grn.set_params(&randn(&mut rng, C, 0.8), &randn(&mut rng, C, 0.5)).unwrap();
    let mut x = randn(&mut rng, B * T * C, 1.0);
    let mut w = randn(&mut rng, C, 0.7);
    let z = [0.3f32, -0.4];

    // Forward: GRN, masked mean-pool over real positions, dot with w.
    let mut h = vec![0.0; x.len()];
    grn.forward(&mut h, &x, &RAGGED, B, T, C);
    let mut dh = vec![0.0; x.len()];
    let mut dw = vec![0.0f32; C];
    for b in 0..B {
        let real: Vec<usize> = (0..T).filter(|&t| RAGGED[b * T + t] != 0.0).collect();
        let inv = 1.0 / real.len() as f32;
        let mut pooled = vec![0.0f32; C];
        for &t in &real {
            for j in 0..C {
                pooled[j] += h[(b * T + t) * C + j] * inv;
            }
        }
        let dv = (dot(&pooled, &w) - z[b] as f64) as f32;
        // Backward of the head: dv flows to w through the pooled state and to each real position.
        for j in 0..C {
            dw[j] += dv * pooled[j];
        }
        for &t in &real {
            for j in 0..C {
                dh[(b * T + t) * C + j] = dv * w[j] * inv;
            }
        }
    }
    let mut dx = vec![0.0; x.len()];
    grn.backward(&mut dx, &dh, &x, &RAGGED, B, T, C);

    let (x0, w0) = (x.clone(), w.clone());
    let with =
        |gamma: &[f32], beta: &[f32]| Grn::from_params(Head::Value, gamma.to_vec(), beta.to_vec(), GRN_EPS).unwrap();
    let (gamma, beta) = (grn.gamma.clone(), grn.beta.clone());
    fd_check("value dx", &mut x, &dx, |x| value_head_loss(&grn, &w0, x, &z));
    fd_check("value dw", &mut w, &dw, |w| value_head_loss(&grn, w, &x0, &z));
    fd_check("value dgamma", &mut gamma.clone(), &grn.dgamma, |g| value_head_loss(&with(g, &beta), &w0, &x0, &z));
    fd_check("value dbeta", &mut beta.clone(), &grn.dbeta, |bt| value_head_loss(&with(&gamma, bt), &w0, &x0, &z));
    // Padding positions carry no gradient from a head that ignores them.
    assert!(dx[(T + 3) * C..].iter().all(|&v| v == 0.0));
}

//! Parity cases of [`SamplingOps::sample`] on a kernel device (`kernels/sampling.cu`) against
//! the CPU backend's, which runs [`crate::backend::cpu::sampling::sample`], the oracle.
//!
//! Every case compares, row by row: the uniform the device drew with against
//! `counter_rng::uniform` (equal bits: the Philox port is checked directly, not through the
//! draws), the outcome (token or error), the token exactly, the error exactly (variant, token
//! id, the value's bits), and the log-prob within the tolerance justified in [`compare_rows`].
//! Tokens are compared exactly although the device sums masses in another order than the
//! oracle: a draw can move only when u lies within ~1e-15 relative of a cumulative boundary,
//! which no case here is built to hit (a chance hit has probability ~1e-13 per draw).

use super::{case_seed, randn, Report, Tol};
use crate::backend::cpu::CpuBackend;
use crate::backend::device::Device;
use crate::backend::kernel::KernelBackend;
use crate::backend::prelude::*;
use crate::backend::{SampleError, SampleParams, Sampled};
use crate::util::counter_rng::uniform;
use crate::util::rng::Rng;

/// Every case of this family.
pub(super) fn cases<D: Device>(kb: &KernelBackend<D>, seed: u64, rep: &mut Report) {
    sweep_cases(kb, seed, rep);
    many_rows_case(kb, seed, rep);
    error_cases(kb, rep);
    big_vocab_case(kb, seed, rep);
}

fn params(temperature: f32, top_k: usize, top_p: f32) -> SampleParams {
    SampleParams { temperature, top_k, top_p, seed: 0x5EED_0000_0000_0017, step: 3 | 1 << 33 }
}

/// Every row its own (sequence, position), with high bits set so every counter word matters.
fn counters(rows: usize, salt: u32) -> Vec<[u32; 2]> {
    (0..rows as u32).map(|r| [r.wrapping_mul(0x9E37_79B9) ^ salt, 1000 + 7 * r]).collect()
}

/// The configurations every small case runs: greedy, T = 1 and 0.7 untruncated, top-k 1, 5, 50,
/// top-p 0.9 and 0.5 alone, top-k 20 with top-p 0.95.
const SWEEP: [(f32, usize, f32); 9] = [
    (0.0, 0, 1.0),
    (1.0, 0, 1.0),
    (0.7, 0, 1.0),
    (1.0, 1, 1.0),
    (1.0, 5, 1.0),
    (1.0, 50, 1.0),
    (1.0, 0, 0.9),
    (1.0, 0, 0.5),
    (1.0, 20, 0.95),
];

/// Runs the op on both backends and compares every row (see the module docs). Returns the
/// oracle's results.
fn compare_rows<D: Device>(
    kb: &KernelBackend<D>,
    rep: &mut Report,
    shape: &str,
    logits: &[f32],
    v: usize,
    ctr: &[[u32; 2]],
    p: SampleParams,
) -> Vec<Result<Sampled, SampleError>> {
    let cfg = format!("T={} k={} p={}", p.temperature, p.top_k, p.top_p);
    let want = CpuBackend::new(Some(1)).sample(&logits.to_vec(), v, ctr, p);
    let got = kb.sample_with_uniforms(&kb.upload(logits), v, ctr, p);

    let u_ok = got.iter().zip(ctr).all(|(g, &[s, q])| g.1.to_bits() == uniform(p.seed, p.step, s, q).to_bits());
    rep.check("sample/uniform", shape, u_ok, "device Philox = counter_rng::uniform, bit for bit");

    let kinds = got.iter().zip(&want).position(|(g, w)| g.0.is_ok() != w.is_ok());
    let note = match kinds {
        None => "token or error on the same rows".to_string(),
        Some(i) => format!("{cfg}: row {i}: device {:?} vs oracle {:?}", got[i].0, want[i]),
    };
    rep.check("sample/outcome", shape, kinds.is_none(), &note);

    let (mut gt, mut wt, mut gl, mut wl) = (vec![], vec![], vec![], vec![]);
    let mut bad_err = None;
    for (i, ((g, _), w)) in got.iter().zip(&want).enumerate() {
        match (g, w) {
            (Ok(g), Ok(w)) => {
                // Ids < 2^24 are exact in f32.
                gt.push(g.token as f32);
                wt.push(w.token as f32);
                gl.push(g.logprob);
                wl.push(w.logprob);
            }
            (Err(g), Err(w)) if !same_error(g, w) && bad_err.is_none() => bad_err = Some((i, *g, *w)),
            _ => {}
        }
    }
    rep.cmp("sample/token", shape, &gt, &wt, Tol::Exact, &format!("exact ({cfg})"));
    // Tolerance. Both sides evaluate the same f64 expression z − m − ln s and round it to f32;
    // only s's summation order (≤ V·2⁻⁵³ ≈ 6e-12 relative for V = 50257) and the device's log
    // (≤ 1 ulp of f64) differ, so the f64 values agree to ~1e-11 absolute and the f32 results
    // are equal or one f32 ulp apart (≤ 2⁻²³ relative) where they straddle a rounding
    // boundary. A wrong token, m or s is off by far more (≥ 1e-3 for these rows).
    let tol = Tol::Each { tol: 1.2e-7, floor: 0.0, abs: 1e-10 };
    rep.cmp("sample/logprob", shape, &gl, &wl, tol, "1 f32 ulp + 1e-10 (f64 sums, then f32)");
    let note = match bad_err {
        None => "variant, token and value bits equal".to_string(),
        Some((i, g, w)) => format!("{cfg}: row {i}: device {g:?} vs oracle {w:?}"),
    };
    rep.check("sample/error", shape, bad_err.is_none(), &note);
    want
}

/// Equal errors, the logit compared by bits (a NaN equals only the same NaN).
fn same_error(a: &SampleError, b: &SampleError) -> bool {
    match (a, b) {
        (SampleError::NonFinite { token: ta, value: va }, SampleError::NonFinite { token: tb, value: vb }) => {
            ta == tb && va.to_bits() == vb.to_bits()
        }
        (SampleError::TemperatureOverflow { temperature: a }, SampleError::TemperatureOverflow { temperature: b }) => {
            a.to_bits() == b.to_bits()
        }
        (a, b) => a == b,
    }
}

/// The sweep on small rows of three kinds: Gaussian logits; ~30% masked (−∞) tokens, one row
/// with a single finite token and one with fewer finite tokens than top-k (zero-mass tokens
/// inside the top-k set); logits rounded to integers and halves, so exact ties fall on every
/// top-k / top-p / draw boundary, with −0.0 and +0.0 mixed (they tie) and one all-equal row.
fn sweep_cases<D: Device>(kb: &KernelBackend<D>, seed: u64, rep: &mut Report) {
    let (rows, v) = (8usize, 150usize);
    let mut rng = Rng::new(case_seed(seed, 2500));
    let gauss = randn(&mut rng, rows * v, 2.0);
    let mut masked = randn(&mut rng, rows * v, 2.0);
    for x in masked.iter_mut() {
        if rng.uniform() < 0.3 {
            *x = f32::NEG_INFINITY;
        }
    }
    masked[..v].iter_mut().enumerate().for_each(|(j, x)| *x = if j == 77 { 1.5 } else { f32::NEG_INFINITY });
    masked[v..2 * v].iter_mut().enumerate().for_each(|(j, x)| {
        if j % 20 != 3 {
            *x = f32::NEG_INFINITY
        }
    });
    let mut ties: Vec<f32> = randn(&mut rng, rows * v, 1.5).into_iter().map(|x| (2.0 * x).round() / 2.0).collect();
    for (j, x) in ties.iter_mut().enumerate() {
        if *x == 0.0 && j % 2 == 1 {
            *x = -0.0;
        }
    }
    ties[..v].iter_mut().for_each(|x| *x = 0.25);
    let ctr = counters(rows, 0xA5A5_0000);
    for (name, logits) in [("gauss", &gauss), ("masked", &masked), ("ties", &ties)] {
        let shape = format!("R={rows} V={v} {name}");
        for &(t, k, p) in &SWEEP {
            rep.case("sample", &shape, |rep| {
                compare_rows(kb, rep, &shape, logits, v, &ctr, params(t, k, p));
            });
        }
    }
}

/// 64 rows of V = 1000 with their own counters, at T = 1 untruncated and top-k 20 + top-p
/// 0.95: the draws must depend on u (a check counts the rows whose oracle token changes when
/// u moves by ½), so agreeing tokens show the device draws with the same uniform, by the
/// same rule.
fn many_rows_case<D: Device>(kb: &KernelBackend<D>, seed: u64, rep: &mut Report) {
    let (rows, v) = (64usize, 1000usize);
    let mut rng = Rng::new(case_seed(seed, 2501));
    let logits = randn(&mut rng, rows * v, 1.0);
    let ctr = counters(rows, 0x0F0F_0000);
    let shape = format!("R={rows} V={v}");
    for (t, k, p) in [(1.0, 0, 1.0), (1.0, 20, 0.95)] {
        rep.case("sample", &shape, |rep| {
            let cfg = params(t, k, p);
            let want = compare_rows(kb, rep, &shape, &logits, v, &ctr, cfg);
            let sensitive = logits
                .chunks(v)
                .zip(&ctr)
                .zip(&want)
                .filter(|((row, &[s, q]), w)| {
                    let u = (uniform(cfg.seed, cfg.step, s, q) + 0.5) % 1.0;
                    let other = crate::backend::cpu::sampling::sample(row, &cfg, u).map(|x| x.token);
                    other != w.map(|x| x.token)
                })
                .count();
            let note = format!("{sensitive} of {rows} draws change when u moves by 1/2 (need >= 40)");
            rep.check("sample/u_sensitive", &shape, sensitive >= 40, &note);
        });
    }
}

/// Rows that cannot be sampled, each error once, and a good row among them: all −∞; a +∞
/// before a NaN (the first in id order wins); a NaN (its bits come back); a +∞ in the last
/// column; all −∞ but one NaN (NonFinite before AllMasked); a logit of 3e38, which overflows
/// at T = 0.5 but not when greedy (T counts as 1).
fn error_cases<D: Device>(kb: &KernelBackend<D>, rep: &mut Report) {
    let (rows, v) = (7usize, 64usize);
    let mut logits: Vec<f32> = (0..rows * v).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
    let row = |r: usize| r * v..(r + 1) * v;
    logits[row(0)].iter_mut().for_each(|x| *x = f32::NEG_INFINITY);
    logits[v + 5] = f32::INFINITY;
    logits[v + 10] = f32::NAN;
    logits[2 * v + 3] = f32::from_bits(0x7fc0_1234);
    logits[3 * v + v - 1] = f32::INFINITY;
    logits[row(4)].iter_mut().for_each(|x| *x = f32::NEG_INFINITY);
    logits[4 * v + 40] = f32::NAN;
    logits[5 * v + 9] = 3e38;
    let ctr = counters(rows, 0x1234_0000);
    let shape = format!("R={rows} V={v} errors");
    for (t, k, p) in [(0.5, 0, 1.0), (0.0, 0, 1.0), (0.5, 5, 0.9)] {
        rep.case("sample", &shape, |rep| {
            let want = compare_rows(kb, rep, &shape, &logits, v, &ctr, params(t, k, p));
            let errors = want.iter().filter(|w| w.is_err()).count();
            let expect = if t == 0.0 { 5 } else { 6 };
            rep.check("sample/error", &shape, errors == expect, "the error rows are errors on the oracle");
        });
    }
}

/// GPT-2's vocabulary, three rows: untruncated at T = 1, top-k 50 + top-p 0.9 at T = 0.8,
/// greedy.
fn big_vocab_case<D: Device>(kb: &KernelBackend<D>, seed: u64, rep: &mut Report) {
    let (rows, v) = (3usize, 50257usize);
    let mut rng = Rng::new(case_seed(seed, 2502));
    let logits = randn(&mut rng, rows * v, 3.0);
    let ctr = counters(rows, 0x7777_0000);
    let shape = format!("R={rows} V={v}");
    for (t, k, p) in [(1.0, 0, 1.0), (0.8, 50, 0.9), (0.0, 0, 1.0)] {
        rep.case("sample", &shape, |rep| {
            compare_rows(kb, rep, &shape, &logits, v, &ctr, params(t, k, p));
        });
    }
}

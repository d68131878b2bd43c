//! Parity of a kernel-running device with the CPU oracle, as library code: `dapo selftest`
//! runs it on a GPU (or the emulator), `tests/kernel_parity.rs` runs it in CI on the emulator.
//!
//! [`run_all`] goes through [`KernelBackend`] exactly as the model and the trainer do (the
//! [`Backend`] trait for every op; the inherent method for group advantages) on ragged shapes (sizes that are not multiples of 32, padded masks), and
//! compares every output with its CPU oracle ([`CpuBackend`], [`crate::model::grn`],
//! [`crate::rl::advantage::group_advantages`], the chunked objective of [`crate::rl::objective`]
//! run on the CPU). Each comparison is a [`ParityRow`] with its tolerance, justified next to
//! the comparison. Nothing here panics on a mismatch: a wrong value is a row with
//! `pass = false`, and a case whose op panics (a launch error, a device fault) is a failing row
//! naming the panic.
//!
//! Rows of the same op and shape (the configurations of one case) are merged: the row shows
//! the worst error, and its note names the configuration it came from (or the first failing
//! one).

mod attention;
mod basic;
mod grn;
mod norm;
mod policy_loss;
mod sampling;

use std::panic::{catch_unwind, AssertUnwindSafe};

use super::cpu::CpuBackend;
use super::device::Device;
use super::kernel_backend::KernelBackend;
use super::{Backend, Gemm, IsLevel, KlEstimator, LogprobChunk, LossType};
use crate::rl::advantage::{group_advantages, AdvantageConfig, AdvantageScaling};
use crate::rl::objective::{DapoObjective, LossNorm, ObjectiveBatch, ObjectiveConfig, ObjectiveMetrics};
use crate::util::rng::Rng;

/// One compared output: which op and tensor, on which shape, how far from the oracle.
#[derive(Clone, Debug, PartialEq)]
pub struct ParityRow {
    /// Op family and tensor, e.g. `grn_forward/out` (the family is the part before `/`).
    pub op: String,
    /// The shape (named dimensions) and how many configurations the row covers.
    pub shape: String,
    /// Largest |device − oracle| (infinite where one side is NaN and the other is not).
    pub max_abs: f64,
    /// The error measure compared with `tol` (see [`Tol`]: relative to the tensor's scale, or
    /// per element).
    pub max_rel: f64,
    /// The tolerance on `max_rel`.
    pub tol: f64,
    /// `max_rel <= tol` (and every structural check of the row held).
    pub pass: bool,
    /// What the tolerance is relative to, the worst configuration, or why the row failed.
    pub note: String,
}

/// How a device tensor is compared with the oracle's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Tol {
    /// max |g − w| ≤ tol · max(max |w|, floor): error relative to the tensor's scale.
    Scale {
        /// The bound.
        tol: f64,
        /// The smallest scale (for tensors that are nearly zero).
        floor: f64,
    },
    /// |g_i − w_i| ≤ tol · max(|w_i|, floor) + abs for every element; `max_rel` reports
    /// max_i |g_i − w_i| / (max(|w_i|, floor) + abs/tol).
    Each {
        /// Relative part of the bound.
        tol: f64,
        /// Values below this count as this (relative part).
        floor: f64,
        /// Absolute part of the bound.
        abs: f64,
    },
    /// Equal values (NaN equals NaN, −0 equals +0).
    Exact,
    /// Equal bit patterns.
    Bits,
}

impl Tol {
    fn bound(self) -> f64 {
        match self {
            Tol::Scale { tol, .. } | Tol::Each { tol, .. } => tol,
            Tol::Exact | Tol::Bits => 0.0,
        }
    }
}

/// Compares `got` (device) with `want` (oracle) under `tol`; never panics. `note` is kept
/// when the row passes; a failing row's note says where it failed.
pub fn compare(op: &str, shape: &str, got: &[f32], want: &[f32], tol: Tol, note: &str) -> ParityRow {
    let mut row = ParityRow {
        op: op.to_string(),
        shape: shape.to_string(),
        max_abs: 0.0,
        max_rel: 0.0,
        tol: tol.bound(),
        pass: true,
        note: note.to_string(),
    };
    if got.len() != want.len() {
        row.max_abs = f64::INFINITY;
        row.max_rel = f64::INFINITY;
        row.pass = false;
        row.note = format!("{note}: device gave {} values, oracle {}", got.len(), want.len());
        return row;
    }
    let scale = want.iter().filter(|w| w.is_finite()).fold(0.0f64, |m, &w| m.max(w.abs() as f64));
    let mut first_bad: Option<usize> = None;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let same = (g.is_nan() && w.is_nan()) || g == w;
        let d = if same { 0.0 } else { ((g as f64) - (w as f64)).abs() };
        let d = if d.is_nan() { f64::INFINITY } else { d };
        row.max_abs = row.max_abs.max(d);
        let (rel, ok) = match tol {
            Tol::Scale { .. } => (0.0, true), // decided on the whole tensor below
            Tol::Each { tol, floor, abs } => {
                let den = (w.abs() as f64).max(floor) + if tol > 0.0 { abs / tol } else { 0.0 };
                let rel = if d == 0.0 {
                    0.0
                } else if den > 0.0 {
                    d / den
                } else {
                    f64::INFINITY
                };
                (rel, d <= tol * (w.abs() as f64).max(floor) + abs)
            }
            Tol::Exact => (if same { 0.0 } else { d / scale.max(f32::MIN_POSITIVE as f64) }, same),
            Tol::Bits => {
                let same_bits = g.to_bits() == w.to_bits();
                (
                    if same_bits { 0.0 } else { d.max(f64::MIN_POSITIVE) / scale.max(f32::MIN_POSITIVE as f64) },
                    same_bits,
                )
            }
        };
        row.max_rel = row.max_rel.max(rel);
        if !ok && first_bad.is_none() {
            first_bad = Some(i);
        }
    }
    if let Tol::Scale { tol, floor } = tol {
        row.max_rel = row.max_abs / scale.max(floor);
        if row.max_rel > tol {
            let i = got.iter().zip(want).position(|(&g, &w)| {
                let same = (g.is_nan() && w.is_nan()) || g == w;
                !same && (((g as f64) - (w as f64)).abs() / scale.max(floor) > tol || (g - w).is_nan())
            });
            first_bad = Some(i.unwrap_or(0));
        }
    }
    if let Some(i) = first_bad {
        row.pass = false;
        row.note = format!("{note}: first bad value at {i}: device {} vs oracle {}", got[i], want[i]);
    }
    row
}

/// A row for a condition that is not a comparison of two tensors (e.g. "both clip branches
/// occurred"): errors 0 when it holds, infinite when not.
pub fn check(op: &str, shape: &str, ok: bool, note: &str) -> ParityRow {
    let e = if ok { 0.0 } else { f64::INFINITY };
    ParityRow {
        op: op.to_string(),
        shape: shape.to_string(),
        max_abs: e,
        max_rel: e,
        tol: 0.0,
        pass: ok,
        note: if ok { note.to_string() } else { format!("{note}: does not hold") },
    }
}

/// The rows of one run, merging rows of the same op and shape.
#[derive(Default)]
struct Report {
    rows: Vec<ParityRow>,
}

impl Report {
    fn push(&mut self, r: ParityRow) {
        let Some(old) = self.rows.iter_mut().find(|o| o.op == r.op && o.shape == r.shape) else {
            self.rows.push(r);
            return;
        };
        // The note follows the first failure, else the worst error.
        let take_note = (old.pass && !r.pass) || (old.pass == r.pass && r.max_rel > old.max_rel && old.pass);
        if take_note {
            old.note = r.note;
        }
        old.max_abs = old.max_abs.max(r.max_abs);
        old.max_rel = old.max_rel.max(r.max_rel);
        old.tol = old.tol.max(r.tol);
        old.pass &= r.pass;
    }

    fn cmp(&mut self, op: &str, shape: &str, got: &[f32], want: &[f32], tol: Tol, note: &str) {
        self.push(compare(op, shape, got, want, tol, note));
    }

    fn check(&mut self, op: &str, shape: &str, ok: bool, note: &str) {
        self.push(check(op, shape, ok, note));
    }

    /// Runs one case; a panic inside it (a device error, a failed size check) becomes a
    /// failing row instead of ending the run.
    fn case(&mut self, op: &str, shape: &str, f: impl FnOnce(&mut Report)) {
        let mut inner = Report::default();
        let r = catch_unwind(AssertUnwindSafe(|| f(&mut inner)));
        for row in inner.rows {
            self.push(row);
        }
        if let Err(p) = r {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            self.push(check(op, shape, false, &format!("panicked: {msg}")));
        }
    }
}

/// The rows of the families whose device results go through the GEMM (matmul, and the DAPO
/// objective from hidden × lm_head), whose tolerances are TF32's: what changes when the
/// matmul precision does.
pub fn run_gemm_families<D: Device>(k: &KernelBackend<D>, seed: u64) -> Vec<ParityRow> {
    let mut r = Report::default();
    matmul_cases(k, seed, &mut r);
    objective_cases(k, seed, &mut r);
    r.rows
}

/// Runs every parity case on `k` with inputs drawn from `seed` and returns one row per
/// compared tensor and shape. Never panics on a mismatch (see the module docs).
pub fn run_all<D: Device>(k: &KernelBackend<D>, seed: u64) -> Vec<ParityRow> {
    let mut r = Report::default();
    grn::cases(k, seed, &mut r);
    advantage_cases(k, seed, &mut r);
    logprob_cases(k, seed, &mut r);
    policy_loss::cases(k, seed, &mut r);
    matmul_cases(k, seed, &mut r);
    objective_cases(k, seed, &mut r);
    basic::cases(k, seed, &mut r);
    norm::cases(k, seed, &mut r);
    attention::cases(k, seed, &mut r);
    sampling::cases(k, seed, &mut r);
    r.rows
}

/// The op families [`run_all`] covers (the part of [`ParityRow::op`] before `/`).
pub const FAMILIES: [&str; 27] = [
    "grn_forward",
    "grn_backward",
    "grn_causal_forward",
    "grn_causal_backward",
    "grn_causal_step",
    "group_advantage",
    "logprob_fwd",
    "logprob_bwd",
    "policy_loss",
    "matmul",
    "objective",
    "encoder_forward",
    "encoder_backward",
    "encoder_forward_at",
    "gelu_forward",
    "gelu_backward",
    "bias_backward",
    "adamw",
    "global_norm",
    "scale",
    "layernorm_forward",
    "layernorm_backward",
    "cross_entropy",
    "attention_forward",
    "attention_backward",
    "attention_cached",
    "sample",
];

/// The rows as an aligned text table: op, shape, max abs err, max rel err, tolerance, result, note.
pub fn table(rows: &[ParityRow]) -> String {
    let wo = rows.iter().map(|r| r.op.len()).max().unwrap_or(2).max(2);
    let ws = rows.iter().map(|r| r.shape.len()).max().unwrap_or(5).max(5);
    let mut s = format!(
        "{:<wo$}  {:<ws$}  {:>11}  {:>11}  {:>9}  {:<6}  note\n",
        "op", "shape", "max abs err", "max rel err", "tolerance", "result"
    );
    for r in rows {
        s += &format!(
            "{:<wo$}  {:<ws$}  {:>11.2e}  {:>11.2e}  {:>9.1e}  {:<6}  {}\n",
            r.op,
            r.shape,
            r.max_abs,
            r.max_rel,
            r.tol,
            if r.pass { "PASS" } else { "FAIL" },
            r.note
        );
    }
    s
}

// ---- helpers -----------------------------------------------------------------------------------

/// The seed of case `case` of a run with `seed`: seed 0 reproduces the seeds the parity tests
/// used before they moved here.
fn case_seed(seed: u64, case: u64) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(case)
}

fn randn(rng: &mut Rng, n: usize, std: f32) -> Vec<f32> {
    (0..n).map(|_| rng.normal() * std).collect()
}

fn nans(n: usize) -> Vec<f32> {
    vec![f32::NAN; n]
}

/// A mask (B,T) with ragged real lengths; sequence `all_pad` (if any) is all padding.
fn ragged_mask(rng: &mut Rng, b: usize, t: usize, all_pad: Option<usize>) -> Vec<f32> {
    let mut m = vec![0.0f32; b * t];
    for bi in 0..b {
        if Some(bi) == all_pad {
            continue;
        }
        let len = 1 + rng.below(t);
        // Left-padded for odd sequences, right-padded for even ones.
        for ti in 0..len {
            let pos = if bi % 2 == 1 { t - 1 - ti } else { ti };
            m[bi * t + pos] = 1.0;
        }
    }
    m
}

/// Elements of `v` at the rows (of `c` values) where `mask` is 0.
fn padding_rows(v: &[f32], mask: &[f32], c: usize) -> Vec<f32> {
    mask.iter()
        .enumerate()
        .filter(|(_, &m)| m == 0.0)
        .flat_map(|(i, _)| v[i * c..(i + 1) * c].iter().copied())
        .collect()
}

// ---- group advantages --------------------------------------------------------------------------

fn advantage_cases<D: Device>(k: &KernelBackend<D>, seed: u64, rep: &mut Report) {
    // Ragged groups: singletons, a group wider than a warp, sizes that are not multiples of 32.
    let sizes = [1usize, 5, 3, 40, 8, 1, 16, 33, 2, 7, 12, 4];
    let n: usize = sizes.iter().sum();
    let shape = format!("N={n} G={} (12 configs)", sizes.len());
    rep.case("group_advantage", &shape, |rep| {
        let mut rng = Rng::new(case_seed(seed, 7));
        let mut rewards: Vec<f32> = Vec::new();
        for (gi, &s) in sizes.iter().enumerate() {
            for _ in 0..s {
                rewards.push(match gi % 4 {
                    0 => rng.normal(),
                    1 => (rng.below(2)) as f32, // binary rewards
                    2 => 0.75,                  // all equal: advantages exactly 0
                    _ => 3.0 + 0.1 * rng.normal(),
                });
            }
        }
        let mut offsets = vec![0i32];
        for &s in &sizes {
            offsets.push(offsets.last().copied().unwrap_or(0) + s as i32);
        }
        let r64: Vec<f64> = rewards.iter().map(|&r| r as f64).collect();
        let d_r = k.upload(&rewards);
        let offsets = match k.group_offsets(&offsets) {
            Ok(o) => o,
            Err(e) => return rep.check("group_advantage", &shape, false, &e),
        };
        for scaling in [AdvantageScaling::Group, AdvantageScaling::Batch, AdvantageScaling::None] {
            for eps in [1e-4f32, 0.0] {
                for clip in [None, Some(1.5f32)] {
                    let cfg = AdvantageConfig { scaling, eps: eps as f64, clip: clip.map(|c| c as f64) };
                    let what = format!("{scaling:?}, eps {eps}, clip {clip:?}");
                    let want: Vec<f32> = match group_advantages(&r64, &sizes, &cfg) {
                        Ok(a) => a.iter().map(|&a| a as f32).collect(),
                        Err(e) => {
                            rep.check("group_advantage", &shape, false, &format!("{what}: oracle failed: {e}"));
                            continue;
                        }
                    };
                    let mut d_out = k.upload(&nans(n));
                    k.group_advantage(&mut d_out, &d_r, &offsets, scaling, eps, clip);
                    let got = k.download(&d_out);
                    // f32 means and sums of squares over 132 values (the oracle's are
                    // f64): relative error ~n·2⁻²⁴ ≈ 1e-5 on the std, carried into A = c/std,
                    // where |A| ≤ ~6 for these groups. 2e-5·max(|A|,1) + 1e-5 absolute.
                    let tol = Tol::Each { tol: 2e-5, floor: 1.0, abs: 1e-5 };
                    rep.cmp("group_advantage", &shape, &got, &want, tol, &format!("per value; worst {what}"));
                    // Equal-reward groups and singletons give exactly 0 on both sides.
                    let zeros: Vec<f32> = got.iter().zip(&want).filter(|(_, &w)| w == 0.0).map(|(&g, _)| g).collect();
                    let want_zeros = vec![0.0f32; zeros.len()];
                    rep.cmp("group_advantage/zeros", &shape, &zeros, &want_zeros, Tol::Exact, "equal rewards give 0");
                }
            }
        }
    });
}

// ---- log-softmax gather + entropy --------------------------------------------------------------

fn logprob_cases<D: Device>(k: &KernelBackend<D>, seed: u64, rep: &mut Report) {
    let cpu = CpuBackend::new(Some(1));
    let n_tok = 11usize; // per-token buffers; the chunk covers rows row0..row0+rows
    let row0 = 3usize;
    // V: a single column, fewer columns than threads, ragged, several columns per thread, and
    // GPT-2's vocabulary (the real block/stride arithmetic at full width, few rows).
    let cases = [(5usize, 1usize, 1.0f32), (4, 37, 0.7), (6, 300, 1.0), (5, 1000, 1.3), (3, 50257, 1.0)];
    for (case, &(rows, v, temp)) in cases.iter().enumerate() {
        let shape = format!("rows={rows} V={v} temp={temp}");
        rep.case("logprob_fwd", &shape, |rep| {
            let mut rng = Rng::new(case_seed(seed, 300 + case as u64));
            let ch = LogprobChunk { row0, rows, v, inv_temperature: 1.0 / temp };
            // The logits buffer is longer than rows·V (a chunk workspace with a short last chunk).
            let logits = randn(&mut rng, rows * v + 7, 3.0);
            let mut targets: Vec<u32> = (0..n_tok).map(|_| rng.below(v) as u32).collect();
            targets[row0 + 1] = v as u32; // out of range: NaN log-prob, NaN gradient row
            let mut dlogp = randn(&mut rng, n_tok, 1.0);
            let mut dent = randn(&mut rng, n_tok, 1.0);
            if rows > 3 {
                (dlogp[row0 + 2], dent[row0 + 2]) = (0.0, 0.0); // zero upstream: a zero row
            }
            let sentinel = vec![-42.0f32; n_tok];

            // Oracle.
            let (mut lp, mut ent) = (sentinel.clone(), sentinel.clone());
            cpu.logprob_entropy_forward(&logits, &targets, &mut lp, &mut ent, ch);
            let mut dlog = logits.clone();
            cpu.logprob_entropy_backward(&mut dlog, &targets, &dlogp, &dent, ch);

            // Device.
            let (mut d_lp, mut d_ent, mut d_logits, d_t) =
                (k.upload(&sentinel), k.upload(&sentinel), k.upload(&logits), k.upload_ids(&targets));
            k.logprob_entropy_forward(&d_logits, &d_t, &mut d_lp, &mut d_ent, ch);
            let (k_lp, k_ent) = (k.download(&d_lp), k.download(&d_ent));
            let (d_gl, d_gh) = (k.upload(&dlogp), k.upload(&dent));
            k.logprob_entropy_backward(&mut d_logits, &d_t, &d_gl, &d_gh, ch);
            let k_dlog = k.download(&d_logits);

            // Tolerances. Both sides sum V exponentials in f32 in different orders (the oracle
            // in 16 lanes with a polynomial exp, the kernel online per thread with expf,
            // rescaled): ln s and u/s carry a relative error of a few·V^½·2⁻²⁴ (blocked sums
            // of ≤ 3200 terms per lane at V = 50257), at most a few·1e-6, on values of size
            // ln V ≲ 11 → 2e-5 absolute (+2e-6 relative) for logp and H. Rows outside the
            // chunk keep their sentinel exactly (compared as part of the vector: the oracle
            // leaves them too), and the out-of-range target is NaN on both sides.
            let tol = Tol::Each { tol: 2e-6, floor: 0.0, abs: 2e-5 };
            rep.cmp("logprob_fwd/logp", &shape, &k_lp, &lp, tol, "2e-5 abs + 2e-6 rel per value");
            rep.cmp("logprob_fwd/entropy", &shape, &k_ent, &ent, tol, "2e-5 abs + 2e-6 rel per value");
            let outside: Vec<f32> = (0..row0).chain(row0 + rows..n_tok).flat_map(|i| [k_lp[i], k_ent[i]]).collect();
            let want_out = vec![-42.0f32; outside.len()];
            rep.cmp("logprob_fwd/outside", &shape, &outside, &want_out, Tol::Exact, "rows outside the chunk untouched");

            // d/dlogits: each entry is p_j times O(1) factors whose error is that of logp:
            // 1e-5 of the row's scale (floor 1e-3), row by row; the bad-target row is NaN.
            for r in (0..rows).filter(|&r| r != 1) {
                let (got, want) = (&k_dlog[r * v..(r + 1) * v], &dlog[r * v..(r + 1) * v]);
                let tol = Tol::Scale { tol: 1e-5, floor: 1e-3 };
                rep.cmp("logprob_bwd/dlogits", &shape, got, want, tol, &format!("of the row's scale; worst row {r}"));
            }
            let nan_row = k_dlog[v..2 * v].iter().all(|x| x.is_nan());
            rep.check("logprob_bwd/bad_target", &shape, nan_row, "target ≥ V gives a NaN gradient row");
            rep.cmp(
                "logprob_bwd/past_chunk",
                &shape,
                &k_dlog[rows * v..],
                &logits[rows * v..],
                Tol::Exact,
                "values past rows·V untouched",
            );
        });
    }
}

// ---- matmul ------------------------------------------------------------------------------------

fn matmul_cases<D: Device>(k: &KernelBackend<D>, seed: u64, rep: &mut Report) {
    let cpu = CpuBackend::new(Some(1));
    // (m, n, k): ragged sizes (not multiples of any tile), one GPT-2-like product (C = 768),
    // a skinny one; each with the four transpose combinations, with and without bias and
    // accumulation.
    let shapes = [(37usize, 53usize, 29usize), (1, 7, 300), (64, 768, 768), (130, 33, 1)];
    for (case, &(m, n, kk)) in shapes.iter().enumerate() {
        let shape = format!("m={m} n={n} k={kk} (8 configs)");
        rep.case("matmul", &shape, |rep| {
            let mut rng = Rng::new(case_seed(seed, 700 + case as u64));
            let a = randn(&mut rng, m * kk, 1.0);
            let b = randn(&mut rng, kk * n, 1.0);
            let bias = randn(&mut rng, n, 1.0);
            let out0 = randn(&mut rng, m * n, 1.0);
            let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<f32>>();
            let (d_a, d_b, d_bias) = (k.upload(&a), k.upload(&b), k.upload(&bias));
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                for (with_bias, acc) in [(false, false), (true, true)] {
                    let g = Gemm { m, n, k: kk, trans_a: ta, trans_b: tb, accumulate: acc };
                    let bias_h = with_bias.then_some(&bias);
                    let mut want = out0.clone();
                    cpu.matmul(&mut want, &a, &b, bias_h, g);
                    // The bound's scale: Σ_k |a||b| (+ |bias| + |out| when they are added).
                    let mut den = if acc { abs(&out0) } else { vec![0.0; m * n] };
                    let abs_bias = abs(&bias);
                    cpu.matmul(&mut den, &abs(&a), &abs(&b), with_bias.then_some(&abs_bias), g);
                    let mut d_out = k.upload(&out0);
                    k.matmul(&mut d_out, &d_a, &d_b, with_bias.then_some(&d_bias), g);
                    let got = k.download(&d_out);
                    // Tolerance. cuBLASLt runs f32 GEMMs in TF32 on tensor cores: both inputs
                    // are rounded to a 10-bit mantissa (relative 2⁻¹¹ each), products and sums
                    // in f32. Each product then errs by ≤ ~2⁻¹⁰ of |a||b|, so an output errs by
                    // ≤ 2⁻¹⁰·Σ_k|a||b| (≈ 1e-3·√k of the row's typical |a||b| scale for random
                    // signs, the worst case ≤ 1e-3·k), plus f32 accumulation (k·2⁻²⁴ ≤ 5e-5
                    // here). The error per value relative to its Σ|a||b| (+|bias|+|out|) must
                    // be ≤ 2e-3; on the emulator the GEMM is the CPU's and the error is f32
                    // rounding (~1e-7). A transpose or indexing mistake is O(1/√k) ≫ 2e-3.
                    let err: Vec<f32> = got.iter().zip(&want).map(|(g, w)| g - w).collect();
                    let ratio: Vec<f32> = err.iter().zip(&den).map(|(e, d)| e / d.max(f32::MIN_POSITIVE)).collect();
                    let mut row = compare("matmul", &shape, &got, &want, Tol::Exact, "");
                    let worst =
                        ratio
                            .iter()
                            .fold(0.0f64, |m, r| if r.is_nan() { f64::INFINITY } else { m.max(r.abs() as f64) });
                    let what = format!("trans_a={ta} trans_b={tb} bias={with_bias} acc={acc}");
                    row.max_rel = worst;
                    row.tol = 2e-3;
                    row.pass = worst <= 2e-3;
                    row.note = if row.pass {
                        format!("per value, of Σ|a||b| (TF32 bound); worst {what}")
                    } else {
                        format!("{what}: error {worst:.2e} of Σ|a||b| exceeds the TF32 bound")
                    };
                    rep.push(row);
                }
            }
        });
    }
}

// ---- the chunked objective: hidden × lm_head → logp → loss → gradients -------------------------

fn objective_cases<D: Device>(k: &KernelBackend<D>, seed: u64, rep: &mut Report) {
    let cpu = CpuBackend::new(Some(1));
    // (S, L, C, V, chunk rows, config): a short last chunk in each; V = 50257 with few rows
    // exercises the kernels at GPT-2's vocabulary through the real chunking.
    let base = ObjectiveConfig::default();
    let cases = [
        (3usize, 7usize, 16usize, 37usize, 8usize, base.clone()),
        (
            2,
            9,
            24,
            300,
            5,
            ObjectiveConfig {
                loss_type: LossType::Grpo,
                importance_sampling_level: IsLevel::Sequence,
                beta: 0.04,
                entropy_coef: 0.01,
                temperature: 0.7,
                ..base.clone()
            },
        ),
        (1, 3, 16, 50257, 2, ObjectiveConfig { beta: 0.04, entropy_coef: 0.01, ..base.clone() }),
        // A loss without kinks (sapo), another KL estimator, as a micro-batch (LossNorm).
        (
            3,
            8,
            16,
            37,
            7,
            ObjectiveConfig {
                loss_type: LossType::Sapo,
                beta: 0.04,
                kl_estimator: KlEstimator::K2,
                entropy_coef: 0.01,
                ..base.clone()
            },
        ),
    ];
    for (case, (s, l, c, v, chunk, cfg)) in cases.into_iter().enumerate() {
        let cfg = ObjectiveConfig { chunk_rows: chunk, ..cfg };
        let shape = format!("S={s} L={l} C={c} V={v} chunk={chunk}");
        rep.case("objective", &shape, |rep| {
            objective_case(k, &cpu, case_seed(seed, 900 + case as u64), (s, l, c, v), &cfg, &shape, rep)
        });
    }
}

fn objective_case<D: Device>(
    k: &KernelBackend<D>,
    cpu: &CpuBackend,
    seed: u64,
    (s, l, c, v): (usize, usize, usize, usize),
    cfg: &ObjectiveConfig,
    shape: &str,
    rep: &mut Report,
) {
    let n = s * l;
    // The sapo case runs as a micro-batch of a larger minibatch.
    let norm = (cfg.loss_type == LossType::Sapo).then_some(LossNorm { sequences: 7.0, tokens: 40.0, accum: 2.0 });
    let mut rng = Rng::new(seed);
    // hidden ~ N(0,1), W ~ N(0, 0.5²): logits of std ~0.5·√C, a realistic spread.
    let hidden = randn(&mut rng, n * c, 1.0);
    let weight = randn(&mut rng, v * c, 0.5);
    let targets: Vec<u32> = (0..n).map(|_| rng.below(v) as u32).collect();
    let mut mask = vec![0.0f32; n];
    for i in 0..s {
        let len = 1 + rng.below(l);
        mask[i * l..i * l + len].fill(1.0);
    }
    let advantages: Vec<f32> =
        (0..s).map(|i| if i % 2 == 0 { 0.8 + rng.uniform() } else { -0.8 - rng.uniform() }).collect();
    let grad_weight0 = randn(&mut rng, v * c, 0.1);

    let fail =
        |rep: &mut Report, what: &str, e: crate::Error| rep.check("objective", shape, false, &format!("{what}: {e}"));
    // The current log-probs on the CPU, to place logp_old so that the ratios straddle both
    // clip bounds but stay ≥ 0.02 (in log space) away from them: on a GPU the logits carry
    // TF32 rounding (≲ 5e-3, see below), which must not flip a clip decision.
    let (c_h, c_w, c_t) = (hidden.clone(), weight.clone(), targets.clone());
    let mut cpu_obj = match DapoObjective::<CpuBackend>::new(cfg.clone()) {
        Ok(o) => o,
        Err(e) => return fail(rep, "config", e),
    };
    let (logp_cpu, ent_cpu) = match cpu_obj.token_logprobs(cpu, &c_h, &c_w, &c_t, n, c, v) {
        Ok(x) => x,
        Err(e) => return fail(rep, "CPU token_logprobs", e),
    };
    let bounds = [(1.0 - cfg.eps_low).ln(), (1.0 + cfg.eps_high).ln()];
    let mut d: Vec<f32> = (0..n).map(|_| 0.3 * rng.normal()).collect();
    let away = |x: f32| bounds.iter().all(|b| (x - b).abs() >= 0.02);
    for x in d.iter_mut() {
        if !away(*x) {
            *x += 0.05;
        }
    }
    if cfg.importance_sampling_level == IsLevel::Sequence {
        // GSPO's ratio is exp of the masked mean of d: keep each sequence's mean away too.
        for i in 0..s {
            let r = i * l..(i + 1) * l;
            let (num, den) = r.clone().fold((0.0f32, 0.0f32), |(a, b), j| (a + mask[j] * d[j], b + mask[j]));
            if !away(num / den.max(1.0)) {
                d[r].iter_mut().for_each(|x| *x += 0.05);
            }
        }
    }
    let logp_old: Vec<f32> = logp_cpu.iter().zip(&d).map(|(lp, d)| lp - d).collect();
    let logp_ref: Vec<f32> = logp_cpu.iter().map(|lp| lp + 0.2 * rng.normal()).collect();

    // Oracle: the objective on the CPU backend.
    let (mut gh_cpu, mut gw_cpu) = (vec![0.0f32; n * c], grad_weight0.clone());
    let batch = ObjectiveBatch::<CpuBackend> {
        hidden: &c_h,
        weight: &c_w,
        targets: &c_t,
        mask: &mask,
        advantages: &advantages,
        logp_old: &logp_old,
        logp_ref: Some(&logp_ref),
        s,
        l,
        c,
        v,
        norm,
    };
    let m_cpu = match cpu_obj.forward_backward(cpu, &batch, &mut gh_cpu, &mut gw_cpu) {
        Ok(m) => m,
        Err(e) => return fail(rep, "CPU objective", e),
    };

    // Device.
    let (d_h, d_w, d_t) = (k.upload(&hidden), k.upload(&weight), k.upload_ids(&targets));
    let (d_mask, d_adv, d_old, d_ref) =
        (k.upload(&mask), k.upload(&advantages), k.upload(&logp_old), k.upload(&logp_ref));
    let mut obj = match DapoObjective::<KernelBackend<D>>::new(cfg.clone()) {
        Ok(o) => o,
        Err(e) => return fail(rep, "config", e),
    };
    let (logp_dev, ent_dev) = match obj.token_logprobs(k, &d_h, &d_w, &d_t, n, c, v) {
        Ok(x) => x,
        Err(e) => return fail(rep, "device token_logprobs", e),
    };
    let (mut d_gh, mut d_gw) = (k.upload(&nans(n * c)), k.upload(&grad_weight0));
    let batch = ObjectiveBatch::<KernelBackend<D>> {
        hidden: &d_h,
        weight: &d_w,
        targets: &d_t,
        mask: &d_mask,
        advantages: &d_adv,
        logp_old: &d_old,
        logp_ref: Some(&d_ref),
        s,
        l,
        c,
        v,
        norm,
    };
    let m_dev = match obj.forward_backward(k, &batch, &mut d_gh, &mut d_gw) {
        Ok(m) => m,
        Err(e) => return fail(rep, "device objective", e),
    };
    let (gh_dev, gw_dev) = (k.download(&d_gh), k.download(&d_gw));

    // Tolerances. On a GPU the logits GEMM runs in TF32: each logit errs by up to
    // 2⁻¹⁰·Σ_c|h||w| ≈ 1e-3·C·0.8·0.4 ≲ 1e-2 at C = 24 in the worst case, ~1e-3 typically
    // (random signs); log p and H inherit that absolute error, the loss (an O(1) mean of
    // ratio·A terms) and the gradients (one more TF32 GEMM each) the same relative size. So
    // 1e-2 of the tensor's scale for logp, H, d hidden and dW, and 1e-2·max(|m|, 0.1) per
    // metric (the k3 KL is ~1e-2 and moves by d·δlogp). On the emulator the GEMM is the CPU's
    // and only f32 summation order differs (~1e-6). A wrong temperature, clip branch or a
    // dropped chunk moves these by ≥ 5e-2.
    let tf32 = Tol::Scale { tol: 1e-2, floor: 1e-3 };
    let note = "of the scale (TF32 logits on a GPU)";
    rep.cmp("objective/logp", shape, &logp_dev, &logp_cpu, tf32, note);
    rep.cmp("objective/entropy", shape, &ent_dev, &ent_cpu, tf32, note);
    rep.cmp("objective/grad_hidden", shape, &gh_dev, &gh_cpu, tf32, note);
    rep.cmp("objective/grad_weight", shape, &gw_dev, &gw_cpu, tf32, "of the scale; accumulated into random dW");
    let pick = |m: &ObjectiveMetrics| vec![m.loss, m.policy_loss, m.kl, m.entropy, m.ratio_mean, m.tokens];
    let tol = Tol::Each { tol: 1e-2, floor: 0.1, abs: 0.0 };
    let note = "loss, policy loss, KL, H, mean ratio, tokens";
    rep.cmp("objective/loss_metrics", shape, &pick(&m_dev), &pick(&m_cpu), tol, note);
    // Clip fractions count tokens: with every ratio ≥ 0.02 from the bounds the same tokens
    // clip on both sides, and the fractions differ only by the rounding of count / Σmask.
    let fracs = |m: &ObjectiveMetrics| vec![m.clip_frac_low, m.clip_frac_high, m.clip_frac_dual];
    let tol = Tol::Each { tol: 1e-6, floor: 0.0, abs: 1e-6 };
    rep.cmp("objective/clip_fracs", shape, &fracs(&m_dev), &fracs(&m_cpu), tol, "the same tokens clip");
}

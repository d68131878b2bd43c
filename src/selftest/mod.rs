//! Parity of a kernel-running device with the CPU oracle, as library code: `dapo selftest`
//! runs it on a GPU (or the emulator), `tests/kernel_parity.rs` runs it in CI on the emulator.
//! One file per op family, named as in `kernels/<family>.cu` and `backend/{cpu,kernel}/`.
//!
//! [`run_all`] goes through [`KernelBackend`] exactly as the model and the trainer do (the
//! op-set traits of [`crate::backend::ops`]) on ragged shapes (sizes that are not multiples of
//! 32, padded masks), and compares every output with its CPU oracle
//! ([`crate::backend::cpu::CpuBackend`] and its oracle functions, the checked advantages of
//! [`crate::rl::advantage`], the chunked objective of [`crate::rl::objective`] run on the CPU).
//! It sits above `model/` and `rl/` for that reason. Each comparison is a [`ParityRow`] with its tolerance, justified next to
//! the comparison. Nothing here panics on a mismatch: a wrong value is a row with
//! `pass = false`, and a case whose op panics (a launch error, a device fault) is a failing row
//! naming the panic.
//!
//! Rows of the same op and shape (the configurations of one case) are merged: the row shows
//! the worst error, and its note names the configuration it came from (or the first failing
//! one).

mod advantage;
mod attention;
mod convert;
mod cross_entropy;
mod encoder;
mod gelu;
mod grn;
mod layernorm;
mod logprob;
mod matmul;
mod objective;
mod optim;
mod policy_loss;
mod sampling;

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::backend::device::Device;
use crate::backend::kernel::{DeviceBuf, KernelBackend};
use crate::backend::precision::round_bf16;
use crate::backend::prelude::MemoryOps;
use crate::backend::Dtype;
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

/// `host` rounded to bf16 (the values a bf16 buffer holds) and a bf16 buffer holding them, on
/// a backend computing in bf16.
fn upload_bf16<D: Device>(k: &KernelBackend<D>, host: &[f32]) -> (Vec<f32>, DeviceBuf<D>) {
    let mut b = k.alloc_as(host.len(), Dtype::Bf16);
    k.write(&mut b, host);
    (host.iter().map(|&x| round_bf16(x)).collect(), b)
}

/// A bf16 buffer of NaN (every value must be written).
fn nans_bf16<D: Device>(k: &KernelBackend<D>, n: usize) -> DeviceBuf<D> {
    upload_bf16(k, &nans(n)).1
}

/// The oracle's f32 result as a bf16 output holds it.
fn rounded(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| round_bf16(x)).collect()
}

/// The tolerance of a bf16 output against the oracle's rounded result, both computed in f32
/// from the same bf16 inputs: they round the same f32 value unless the two f32 results (which
/// differ by f32 rounding, ~1e-6 of the scale) straddle a rounding boundary, where they are
/// one bf16 ulp apart: 2⁻⁷ of the value at most, so 2⁻⁷ of the tensor's scale plus the f32
/// part. An indexing or formula mistake is O(1) of the scale.
const BF16_OUT: Tol = Tol::Scale { tol: 7.9e-3, floor: 1e-3 };

/// The rows of the families whose device results go through the GEMM (matmul, and the DAPO
/// objective from hidden × lm_head), whose tolerances are TF32's: what changes when the
/// matmul precision does.
pub fn run_gemm_families<D: Device>(k: &KernelBackend<D>, seed: u64) -> Vec<ParityRow> {
    let mut r = Report::default();
    matmul::cases(k, seed, &mut r);
    objective::cases(k, seed, &mut r);
    r.rows
}

/// The bf16 variants of every kernel that has one (`{op}_bf16`: conversion, GELU, layer
/// norm's output, attention forward/backward/cached, the bias gradient) and the bf16 GEMM, on
/// `k`, which must compute in bf16 ([`KernelBackend::emulated_bf16`], a GPU at `--dtype
/// bf16`). Each bf16 input is a rounded random tensor; the oracle runs in f32 on the same
/// rounded values and its result is rounded as the device's output is stored.
pub fn run_bf16<D: Device>(k: &KernelBackend<D>, seed: u64) -> Vec<ParityRow> {
    assert_eq!(k.precision().dtype, Dtype::Bf16, "run_bf16 needs a backend computing in bf16");
    let mut r = Report::default();
    convert::cases(k, seed, &mut r);
    gelu::bf16_cases(k, seed, &mut r);
    layernorm::bf16_cases(k, seed, &mut r);
    attention::bf16_cases(k, seed, &mut r);
    matmul::bias_backward_bf16_cases(k, seed, &mut r);
    matmul::cases(k, seed, &mut r);
    r.rows
}

/// Runs every parity case on `k` with inputs drawn from `seed` and returns one row per
/// compared tensor and shape. Never panics on a mismatch (see the module docs).
pub fn run_all<D: Device>(k: &KernelBackend<D>, seed: u64) -> Vec<ParityRow> {
    let mut r = Report::default();
    grn::cases(k, seed, &mut r);
    advantage::cases(k, seed, &mut r);
    logprob::cases(k, seed, &mut r);
    policy_loss::cases(k, seed, &mut r);
    matmul::cases(k, seed, &mut r);
    objective::cases(k, seed, &mut r);
    encoder::cases(k, seed, &mut r);
    gelu::cases(k, seed, &mut r);
    matmul::bias_backward_cases(k, seed, &mut r);
    optim::cases(k, seed, &mut r);
    layernorm::cases(k, seed, &mut r);
    cross_entropy::cases(k, seed, &mut r);
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

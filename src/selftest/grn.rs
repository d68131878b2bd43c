//! Parity cases of GRN on a kernel device: the sequence-wide form (value / judge head), the
//! causal form (policy head) and its KV-cache step, each against the CPU oracle.

use super::{case_seed, nans, padding_rows, ragged_mask, randn, Report, Tol};
use crate::backend::cpu::CpuBackend;
use crate::backend::device::Device;
use crate::backend::kernel::KernelBackend;
use crate::backend::prelude::*;
use crate::backend::GrnShape;
use crate::backend::{GrnCausalStats, GrnParams, GrnSeqStats, GrnStepShape, Masked};
use crate::util::rng::Rng;

/// Every case of this family.
pub(super) fn cases<D: Device>(k: &KernelBackend<D>, seed: u64, rep: &mut Report) {
    sequence_cases(k, seed, rep);
    causal_cases(k, seed, rep);
    step_cases(k, seed, rep);
}

/// Tolerance relative to the tensor's scale.
fn scale(tol: f64) -> Tol {
    Tol::Scale { tol, floor: 1.0 }
}

/// `x` with −0.0 at its first value and at index `c` (or the last): the identity checks must
/// keep the sign of zero.
fn with_negative_zeros(x: &[f32], c: usize) -> Vec<f32> {
    let mut xz = x.to_vec();
    xz[0] = -0.0;
    let last = xz.len() - 1;
    xz[c.min(last)] = -0.0;
    xz
}

fn sequence_cases<D: Device>(k: &KernelBackend<D>, seed: u64, rep: &mut Report) {
    let cpu = CpuBackend::new(Some(1));
    // (B, T, C): C not a multiple of 32, C above the 256-thread block (threads stride), T odd.
    // The last case has eps = 0 and an all-zero sequence 0: μ + eps = 0 there, so N = 0.
    let cases = [(3usize, 7usize, 45usize, 1e-6f32), (2, 33, 300, 1e-6), (4, 5, 1, 1e-6), (2, 4, 33, 0.0)];
    for (case, &(b, t, c, eps)) in cases.iter().enumerate() {
        let shape = format!("B={b} T={t} C={c} eps={eps:.0e}");
        let gs = GrnShape { b, t, c, eps };
        rep.case("grn_forward", &shape, |rep| {
            let mut rng = Rng::new(case_seed(seed, 100 + case as u64));
            let mut x = randn(&mut rng, b * t * c, 1.0);
            if eps == 0.0 {
                x[..t * c].fill(0.0);
            }
            let mask = ragged_mask(&mut rng, b, t, (b > 2).then_some(2));
            let gamma = randn(&mut rng, c, 0.5);
            let beta = randn(&mut rng, c, 0.5);
            let dy = randn(&mut rng, b * t * c, 1.0);
            let dgamma0 = randn(&mut rng, c, 1.0);
            let dbeta0 = randn(&mut rng, c, 1.0);

            // Oracle.
            let (mut out, mut g, mut mean, mut n) =
                (cpu.alloc(b * t * c), cpu.alloc(b * c), cpu.alloc(b), cpu.alloc(b * c));
            cpu.grn_sequence_forward(
                &mut out,
                GrnSeqStats { g: &mut g, mean: &mut mean, n: &mut n },
                Masked { x: &x, mask: &mask },
                GrnParams { gamma: &gamma, beta: &beta },
                gs,
            );
            let (mut dx, mut dgamma, mut dbeta) = (cpu.alloc(b * t * c), dgamma0.clone(), dbeta0.clone());
            cpu.grn_sequence_backward(
                &mut dx,
                GrnParams { gamma: &mut dgamma, beta: &mut dbeta },
                &dy,
                Masked { x: &x, mask: &mask },
                &gamma,
                GrnSeqStats { g: &g, mean: &mean, n: &n },
                gs,
            );

            // Device: outputs start as NaN so an unwritten value shows.
            let mut d_out = k.upload(&nans(b * t * c));
            let (mut d_g, mut d_mean, mut d_n) = (k.upload(&nans(b * c)), k.upload(&nans(b)), k.upload(&nans(b * c)));
            let (d_x, d_mask, d_gamma, d_beta) = (k.upload(&x), k.upload(&mask), k.upload(&gamma), k.upload(&beta));
            k.grn_sequence_forward(
                &mut d_out,
                GrnSeqStats { g: &mut d_g, mean: &mut d_mean, n: &mut d_n },
                Masked { x: &d_x, mask: &d_mask },
                GrnParams { gamma: &d_gamma, beta: &d_beta },
                gs,
            );
            let (k_out, k_g, k_mean, k_n) =
                (k.download(&d_out), k.download(&d_g), k.download(&d_mean), k.download(&d_n));

            // The backward reads the oracle's statistics, so it is checked on its own.
            let (o_g, o_mean, o_n) = (k.upload(&g), k.upload(&mean), k.upload(&n));
            let (mut d_dx, mut d_dgamma, mut d_dbeta, d_dy) =
                (k.upload(&nans(b * t * c)), k.upload(&dgamma0), k.upload(&dbeta0), k.upload(&dy));
            k.grn_sequence_backward(
                &mut d_dx,
                GrnParams { gamma: &mut d_dgamma, beta: &mut d_dbeta },
                &d_dy,
                Masked { x: &d_x, mask: &d_mask },
                &d_gamma,
                GrnSeqStats { g: &o_g, mean: &o_mean, n: &o_n },
                gs,
            );
            let (k_dx, k_dgamma, k_dbeta) = (k.download(&d_dx), k.download(&d_dgamma), k.download(&d_dbeta));

            // Tolerances. The kernel sums T squares (and T products dy·x) in f32 in a different
            // order than the oracle's f64 sums: each sum carries a relative error of about
            // T·2⁻²⁴ ≈ 2e-6 at T = 33, a few ulps more through sqrt, the mean over C and the
            // divisions. 2e-5 of the tensor's scale leaves ~10× headroom and still catches any
            // indexing or masking error (those are O(1) relative). The backward's coefficient
            // subtracts two O(1) terms (γS/D − k/(C·D²)), so dx gets 1e-4 of its scale; the
            // parameter gradients sum B per-sequence partials of T-term f32 sums: 1e-5.
            let note = "of the tensor's scale (f32 vs f64 sums)";
            rep.cmp("grn_forward/out", &shape, &k_out, &out, scale(2e-5), note);
            rep.cmp("grn_forward/g", &shape, &k_g, &g, scale(2e-5), note);
            rep.cmp("grn_forward/mean", &shape, &k_mean, &mean, scale(2e-5), note);
            rep.cmp("grn_forward/n", &shape, &k_n, &n, scale(2e-5), note);
            rep.cmp("grn_backward/dx", &shape, &k_dx, &dx, scale(1e-4), note);
            rep.cmp("grn_backward/dgamma", &shape, &k_dgamma, &dgamma, scale(1e-5), note);
            rep.cmp("grn_backward/dbeta", &shape, &k_dbeta, &dbeta, scale(1e-5), note);
            // Padding positions pass x (forward) and dy (backward) through exactly.
            let (pad_out, pad_x) = (padding_rows(&k_out, &mask, c), padding_rows(&x, &mask, c));
            rep.cmp("grn_forward/padding", &shape, &pad_out, &pad_x, Tol::Exact, "padding rows are x exactly");
            let (pad_dx, pad_dy) = (padding_rows(&k_dx, &mask, c), padding_rows(&dy, &mask, c));
            rep.cmp("grn_backward/padding", &shape, &pad_dx, &pad_dy, Tol::Exact, "padding rows are dy exactly");

            // γ = β = 0 is the identity bit for bit, −0.0 included.
            let xz = with_negative_zeros(&x, c);
            let zeros = k.upload(&vec![0.0; c]);
            let d_xz = k.upload(&xz);
            k.grn_sequence_forward(
                &mut d_out,
                GrnSeqStats { g: &mut d_g, mean: &mut d_mean, n: &mut d_n },
                Masked { x: &d_xz, mask: &d_mask },
                GrnParams { gamma: &zeros, beta: &zeros },
                gs,
            );
            let ident = k.download(&d_out);
            rep.cmp("grn_forward/identity", &shape, &ident, &xz, Tol::Bits, "γ = β = 0 is x bit for bit");
        });
    }
}

fn causal_cases<D: Device>(k: &KernelBackend<D>, seed: u64, rep: &mut Report) {
    let cpu = CpuBackend::new(Some(1));
    // (B, T, C, eps): C not a multiple of 32; C above the 256-thread row block; B·C not a
    // multiple of the scan block; a single channel (N = 1 always); eps = 0 with an all-zero
    // prefix (the first 3 positions of sequence 0: μ + eps = 0 there, so N = 0).
    let cases = [(3usize, 7usize, 45usize, 1e-6f32), (2, 33, 300, 1e-6), (4, 5, 1, 1e-6), (2, 9, 33, 0.0)];
    for (case, &(b, t, c, eps)) in cases.iter().enumerate() {
        let shape = format!("B={b} T={t} C={c} eps={eps:.0e}");
        let gs = GrnShape { b, t, c, eps };
        let btc = b * t * c;
        rep.case("grn_causal_forward", &shape, |rep| {
            let mut rng = Rng::new(case_seed(seed, 150 + case as u64));
            let mut x = randn(&mut rng, btc, 1.0);
            if eps == 0.0 {
                x[..3 * c].fill(0.0);
            }
            let gamma = randn(&mut rng, c, 0.5);
            let beta = randn(&mut rng, c, 0.5);
            let dy = randn(&mut rng, btc, 1.0);
            let dgamma0 = randn(&mut rng, c, 1.0);
            let dbeta0 = randn(&mut rng, c, 1.0);

            let (mut out, mut g, mut mean) = (cpu.alloc(btc), cpu.alloc(btc), cpu.alloc(b * t));
            cpu.grn_causal_forward(
                &mut out,
                GrnCausalStats { g: &mut g, mean: &mut mean },
                &x,
                GrnParams { gamma: &gamma, beta: &beta },
                gs,
            );
            let (mut dx, mut dgamma, mut dbeta) = (cpu.alloc(btc), dgamma0.clone(), dbeta0.clone());
            cpu.grn_causal_backward(
                &mut dx,
                GrnParams { gamma: &mut dgamma, beta: &mut dbeta },
                &dy,
                &x,
                &gamma,
                GrnCausalStats { g: &g, mean: &mean },
                gs,
            );

            let (mut d_out, mut d_g, mut d_mean) = (k.upload(&nans(btc)), k.upload(&nans(btc)), k.upload(&nans(b * t)));
            let (d_x, d_gamma, d_beta) = (k.upload(&x), k.upload(&gamma), k.upload(&beta));
            k.grn_causal_forward(
                &mut d_out,
                GrnCausalStats { g: &mut d_g, mean: &mut d_mean },
                &d_x,
                GrnParams { gamma: &d_gamma, beta: &d_beta },
                gs,
            );
            let (k_out, k_g, k_mean) = (k.download(&d_out), k.download(&d_g), k.download(&d_mean));

            // The backward reads the oracle's statistics, so it is checked on its own.
            let (o_g, o_mean) = (k.upload(&g), k.upload(&mean));
            let (mut d_dx, mut d_dgamma, mut d_dbeta, d_dy) =
                (k.upload(&nans(btc)), k.upload(&dgamma0), k.upload(&dbeta0), k.upload(&dy));
            k.grn_causal_backward(
                &mut d_dx,
                GrnParams { gamma: &mut d_dgamma, beta: &mut d_dbeta },
                &d_dy,
                &d_x,
                &d_gamma,
                GrnCausalStats { g: &o_g, mean: &o_mean },
                gs,
            );
            let (k_dx, k_dgamma, k_dbeta) = (k.download(&d_dx), k.download(&d_dgamma), k.download(&d_dbeta));

            // Tolerances, as for the sequence-wide form: the prefix sums run over at most T
            // terms in f32 against the oracle's f64 (relative error ≈ T·2⁻²⁴ ≈ 2e-6 at T = 33),
            // then sqrt, the mean over C and a division: 2e-5 of the scale. The backward's
            // suffix sum adds T terms that each subtract two O(1) quantities (γ·dy·x/D −
            // kc)/G, where a small prefix norm G amplifies the rounding of the numerator: 2e-4
            // of dx's scale; the parameter gradients are B·T-term f32 sums: 1e-5.
            let note = "of the tensor's scale (f32 vs f64 sums)";
            rep.cmp("grn_causal_forward/out", &shape, &k_out, &out, scale(2e-5), note);
            rep.cmp("grn_causal_forward/g", &shape, &k_g, &g, scale(2e-5), note);
            rep.cmp("grn_causal_forward/mean", &shape, &k_mean, &mean, scale(2e-5), note);
            rep.cmp("grn_causal_backward/dx", &shape, &k_dx, &dx, scale(2e-4), note);
            rep.cmp("grn_causal_backward/dgamma", &shape, &k_dgamma, &dgamma, scale(1e-5), note);
            rep.cmp("grn_causal_backward/dbeta", &shape, &k_dbeta, &dbeta, scale(1e-5), note);

            // γ = β = 0: the forward is x and the backward dy, bit for bit (−0.0 included).
            let xz = with_negative_zeros(&x, c);
            let zeros = k.upload(&vec![0.0; c]);
            let d_xz = k.upload(&xz);
            k.grn_causal_forward(
                &mut d_out,
                GrnCausalStats { g: &mut d_g, mean: &mut d_mean },
                &d_xz,
                GrnParams { gamma: &zeros, beta: &zeros },
                gs,
            );
            rep.cmp(
                "grn_causal_forward/identity",
                &shape,
                &k.download(&d_out),
                &xz,
                Tol::Bits,
                "γ = β = 0 is x bit for bit",
            );
            let dyz = with_negative_zeros(&dy, c);
            let (d_dyz, mut dz_g, mut dz_b) = (k.upload(&dyz), k.alloc(c), k.alloc(c));
            k.grn_causal_backward(
                &mut d_dx,
                GrnParams { gamma: &mut dz_g, beta: &mut dz_b },
                &d_dyz,
                &d_xz,
                &zeros,
                GrnCausalStats { g: &d_g, mean: &d_mean },
                gs,
            );
            rep.cmp(
                "grn_causal_backward/identity",
                &shape,
                &k.download(&d_dx),
                &dyz,
                Tol::Bits,
                "γ = 0 passes dy bit for bit",
            );
        });
    }
}

fn step_cases<D: Device>(k: &KernelBackend<D>, seed: u64, rep: &mut Report) {
    let cpu = CpuBackend::new(Some(1));
    // Three cache sequences of C = 45: a prefill of two sequences in one call (sequence 2's
    // five positions, then sequence 0's three), then decode steps with one row per sequence,
    // sequence 1 joining late (its prefill is one row) and another skipping a step.
    let (b, c, eps) = (3usize, 45usize, 1e-6f32);
    let calls: [&[u32]; 4] = [&[2, 2, 2, 2, 2, 0, 0, 0], &[0, 2], &[1, 0], &[2, 1, 0]];
    let shape = format!("B={b} C={c} calls={}", calls.len());
    rep.case("grn_causal_step", &shape, |rep| {
        let mut rng = Rng::new(case_seed(seed, 170));
        let gamma = randn(&mut rng, c, 0.5);
        let beta = randn(&mut rng, c, 0.5);
        let (d_gamma, d_beta) = (k.upload(&gamma), k.upload(&beta));
        let (mut sums, mut d_sums) = (cpu.alloc(b * c), k.alloc(b * c));
        let (mut worst, mut rows_seen) = (Vec::new(), Vec::new());
        for seq in calls {
            let r = seq.len();
            let x = randn(&mut rng, r * c, 1.0);
            let mut out = cpu.alloc(r * c);
            cpu.grn_causal_step(
                &mut out,
                &mut sums,
                &x,
                &seq.to_vec(),
                GrnParams { gamma: &gamma, beta: &beta },
                GrnStepShape { rows: r, c, eps },
            );
            let mut d_out = k.upload(&nans(r * c));
            k.grn_causal_step(
                &mut d_out,
                &mut d_sums,
                &k.upload(&x),
                &k.upload_ids(seq),
                GrnParams { gamma: &d_gamma, beta: &d_beta },
                GrnStepShape { rows: r, c, eps },
            );
            worst.extend(k.download(&d_out));
            rows_seen.extend(out);
        }
        // f32 running sums on both sides, in the same order; only the kernel's channel mean
        // (a tree reduction against the oracle's sequential f64 sum) and sqrt/division
        // rounding differ: 1e-5 of the scale.
        let note = "of the tensor's scale (same f32 sums, a different mean reduction)";
        rep.cmp("grn_causal_step/out", &shape, &worst, &rows_seen, scale(1e-5), note);
        rep.cmp(
            "grn_causal_step/sumsq",
            &shape,
            &k.download(&d_sums),
            &sums,
            scale(1e-6),
            "same f32 sums in the same order",
        );
    });
}

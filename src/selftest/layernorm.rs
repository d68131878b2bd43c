//! Parity cases of layer norm, forward and backward.

use super::{case_seed, nans, nans_bf16, randn, rounded, Report, Tol, BF16_OUT};
use crate::backend::cpu::CpuBackend;
use crate::backend::device::Device;
use crate::backend::kernel::KernelBackend;
use crate::backend::prelude::*;
use crate::backend::{Affine, LayerNormShape, LnStats};
use crate::util::rng::Rng;

/// A case's input (N, C) with rows offset by `offset`, and weights around 1 and biases around 0
/// (C each).
fn inputs(rng: &mut Rng, n: usize, c: usize, offset: f32) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let inp = randn(rng, n * c, 2.0).into_iter().map(|x| x + offset).collect();
    let w = (0..c).map(|_| 1.0 + 0.3 * rng.normal()).collect();
    (inp, w, randn(rng, c, 0.5))
}

pub(super) fn cases<D: Device>(k: &KernelBackend<D>, seed: u64, rep: &mut Report) {
    let cpu = CpuBackend::new(Some(1));
    // (N, C, row offset): C below one warp's multiple (45), above the 256-thread block (300:
    // threads stride), a single channel (variance 0: out = bias); N = 7 is one backward block
    // taking every row, N = 20 three blocks whose partials the second kernel adds. The offset
    // gives rows a mean large against their spread (a one-pass variance would lose it).
    let cases = [(7usize, 45usize, 0.0f32), (20, 300, 0.0), (5, 1, 0.0), (9, 77, 30.0)];
    for (case, &(n, c, offset)) in cases.iter().enumerate() {
        let shape = format!("N={n} C={c} offset={offset}");
        rep.case("layernorm_forward", &shape, |rep| {
            let mut rng = Rng::new(case_seed(seed, 1100 + case as u64));
            let (inp, w, bias) = inputs(&mut rng, n, c, offset);
            let eps = 1e-5f32;

            // Oracle forward.
            let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
            cpu.layernorm_forward(
                &mut out,
                LnStats { mean: &mut mean, rstd: &mut rstd },
                &inp,
                Affine { w: &w, b: &bias },
                LayerNormShape { n, c, eps },
            );

            // Device forward: outputs start as NaN so an unwritten value shows.
            let (d_inp, d_w, d_bias) = (k.upload(&inp), k.upload(&w), k.upload(&bias));
            let (mut d_out, mut d_mean, mut d_rstd) = (k.upload(&nans(n * c)), k.upload(&nans(n)), k.upload(&nans(n)));
            k.layernorm_forward(
                &mut d_out,
                LnStats { mean: &mut d_mean, rstd: &mut d_rstd },
                &d_inp,
                Affine { w: &d_w, b: &d_bias },
                LayerNormShape { n, c, eps },
            );
            let (k_out, k_mean, k_rstd) = (k.download(&d_out), k.download(&d_mean), k.download(&d_rstd));

            // Tolerances. Both sides sum C values in f32 (the oracle left to right, the kernel
            // per thread then by a tree), so the mean differs by ~√C·2⁻²⁴ of Σ|x|/C (C·2⁻²⁴ ≈
            // 2e-5 of it at worst for C = 300), i.e. 1e-5 of the row's scale max(|x|); rstd by
            // the same relative amount through Σ(x − mean)², sqrt and a division. out =
            // (x − mean)·rstd·w + b inherits ~1e-6 of its scale. Each bound is 1e-5 (out, rstd,
            // relative per value) or 1e-6 of |x| for the mean — ≥ 10× the typical error, while a
            // wrong channel, row or a missing eps is an O(1) error.
            let scale = Tol::Scale { tol: 1e-5, floor: 1.0 };
            rep.cmp("layernorm_forward/out", &shape, &k_out, &out, scale, "of the tensor's scale (f32 sum order)");
            let tol = Tol::Each { tol: 1e-6, floor: 0.0, abs: 2e-6 * (offset as f64 + 2.0) };
            rep.cmp("layernorm_forward/mean", &shape, &k_mean, &mean, tol, "1e-6 rel + 2e-6 of the row's |x| abs");
            let tol = Tol::Each { tol: 1e-5, floor: 0.0, abs: 0.0 };
            rep.cmp("layernorm_forward/rstd", &shape, &k_rstd, &rstd, tol, "1e-5 relative per value");

            // Backward from random dinp/dw/dbias (the op accumulates), reading the oracle's
            // mean/rstd so that it is checked on its own.
            let dout = randn(&mut rng, n * c, 1.0);
            let (dinp0, dw0, db0) = (randn(&mut rng, n * c, 1.0), randn(&mut rng, c, 1.0), randn(&mut rng, c, 1.0));
            let (mut dinp, mut dw, mut db) = (dinp0.clone(), dw0.clone(), db0.clone());
            cpu.layernorm_backward(
                &mut dinp,
                Affine { w: &mut dw, b: &mut db },
                &dout,
                &inp,
                &w,
                LnStats { mean: &mean, rstd: &rstd },
                LayerNormShape { n, c, eps: 0.0 },
            );
            let (d_dout, d_mean_o, d_rstd_o) = (k.upload(&dout), k.upload(&mean), k.upload(&rstd));
            let (mut d_dinp, mut d_dw, mut d_db) = (k.upload(&dinp0), k.upload(&dw0), k.upload(&db0));
            k.layernorm_backward(
                &mut d_dinp,
                Affine { w: &mut d_dw, b: &mut d_db },
                &d_dout,
                &d_inp,
                &d_w,
                LnStats { mean: &d_mean_o, rstd: &d_rstd_o },
                LayerNormShape { n, c, eps: 0.0 },
            );
            let (k_dinp, k_dw, k_db) = (k.download(&d_dinp), k.download(&d_dw), k.download(&d_db));

            // Tolerances. dinp: the two row means of g = dout·w and g·x̂ are C-term f32 sums
            // in different orders (~√C·2⁻²⁴ relative, ≤ 2e-5 at worst), scaled by rstd ≤ 1:
            // 1e-5 of the tensor's scale (which includes the random start, O(3)). dw, dbias:
            // N-term sums per channel, per-block then over blocks on the device, in row order
            // on the CPU (≤ N·2⁻²⁴ ≈ 1e-6 relative), added to a random start: 1e-5 of the
            // scale. A missing accumulation or a wrong channel is O(1).
            let note = "of the tensor's scale; accumulated into random values";
            rep.cmp("layernorm_backward/dinp", &shape, &k_dinp, &dinp, scale, note);
            rep.cmp("layernorm_backward/dw", &shape, &k_dw, &dw, scale, note);
            rep.cmp("layernorm_backward/dbias", &shape, &k_db, &db, scale, note);
        });
    }
}

/// `layernorm_forward_bf16`: the f32 residual stream in, the output (a GEMM's input) stored as
/// bf16, the statistics f32 (held to the f32 cases' bounds: the same arithmetic on the same
/// input).
pub(super) fn bf16_cases<D: Device>(k: &KernelBackend<D>, seed: u64, rep: &mut Report) {
    let cpu = CpuBackend::new(Some(1));
    for (case, &(n, c, offset)) in [(7usize, 45usize, 0.0f32), (20, 300, 30.0)].iter().enumerate() {
        let shape = format!("N={n} C={c} offset={offset}");
        rep.case("layernorm_forward_bf16", &shape, |rep| {
            let mut rng = Rng::new(case_seed(seed, 2800 + case as u64));
            let (inp, w, bias) = inputs(&mut rng, n, c, offset);
            let s = LayerNormShape { n, c, eps: 1e-5 };
            let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
            cpu.layernorm_forward(
                &mut out,
                LnStats { mean: &mut mean, rstd: &mut rstd },
                &inp,
                Affine { w: &w, b: &bias },
                s,
            );
            let (d_inp, d_w, d_bias) = (k.upload(&inp), k.upload(&w), k.upload(&bias));
            let (mut d_out, mut d_mean, mut d_rstd) = (nans_bf16(k, n * c), k.upload(&nans(n)), k.upload(&nans(n)));
            let stats = LnStats { mean: &mut d_mean, rstd: &mut d_rstd };
            k.layernorm_forward(&mut d_out, stats, &d_inp, Affine { w: &d_w, b: &d_bias }, s);
            let note = "one bf16 ulp of the scale";
            rep.cmp("layernorm_forward_bf16/out", &shape, &k.download(&d_out), &rounded(&out), BF16_OUT, note);
            let tol = Tol::Each { tol: 1e-5, floor: 0.0, abs: 2e-6 * (offset as f64 + 2.0) };
            rep.cmp("layernorm_forward_bf16/mean", &shape, &k.download(&d_mean), &mean, tol, "as in f32");
            let tol = Tol::Each { tol: 1e-5, floor: 0.0, abs: 0.0 };
            rep.cmp("layernorm_forward_bf16/rstd", &shape, &k.download(&d_rstd), &rstd, tol, "as in f32");
        });
    }
}

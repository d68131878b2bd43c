//! Parity cases of the GPT-2 layer ops on a kernel device: layer norm and the fused cross-entropy.

use super::{case_seed, nans, randn, Report, Tol};
use crate::backend::cpu::CpuBackend;
use crate::backend::device::Device;
use crate::backend::kernel_backend::KernelBackend;
use crate::backend::Backend;
use crate::util::rng::Rng;

/// Every case of this family.
pub(super) fn cases<D: Device>(k: &KernelBackend<D>, seed: u64, rep: &mut Report) {
    layernorm_cases(k, seed, rep);
    cross_entropy_cases(k, seed, rep);
}

// ---- layer norm --------------------------------------------------------------------------------

fn layernorm_cases<D: Device>(k: &KernelBackend<D>, seed: u64, rep: &mut Report) {
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
            let inp: Vec<f32> = randn(&mut rng, n * c, 2.0).into_iter().map(|x| x + offset).collect();
            let w: Vec<f32> = (0..c).map(|_| 1.0 + 0.3 * rng.normal()).collect();
            let bias = randn(&mut rng, c, 0.5);
            let eps = 1e-5f32;

            // Oracle forward.
            let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
            cpu.layernorm_forward(&mut out, &mut mean, &mut rstd, &inp, &w, &bias, n, c, eps);

            // Device forward: outputs start as NaN so an unwritten value shows.
            let (d_inp, d_w, d_bias) = (k.upload(&inp), k.upload(&w), k.upload(&bias));
            let (mut d_out, mut d_mean, mut d_rstd) = (k.upload(&nans(n * c)), k.upload(&nans(n)), k.upload(&nans(n)));
            k.layernorm_forward(&mut d_out, &mut d_mean, &mut d_rstd, &d_inp, &d_w, &d_bias, n, c, eps);
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
            cpu.layernorm_backward(&mut dinp, &mut dw, &mut db, &dout, &inp, &w, &mean, &rstd, n, c);
            let (d_dout, d_mean_o, d_rstd_o) = (k.upload(&dout), k.upload(&mean), k.upload(&rstd));
            let (mut d_dinp, mut d_dw, mut d_db) = (k.upload(&dinp0), k.upload(&dw0), k.upload(&db0));
            k.layernorm_backward(&mut d_dinp, &mut d_dw, &mut d_db, &d_dout, &d_inp, &d_w, &d_mean_o, &d_rstd_o, n, c);
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

// ---- weighted cross-entropy --------------------------------------------------------------------

fn cross_entropy_cases<D: Device>(k: &KernelBackend<D>, seed: u64, rep: &mut Report) {
    let cpu = CpuBackend::new(Some(1));
    // (N, V): fewer columns than a warp-multiple block (37), several columns per thread (1000,
    // few rows), a single column (loss and gradient exactly 0), GPT-2's vocabulary (the real
    // block and stride arithmetic, two rows).
    let cases = [(7usize, 37usize), (3, 1000), (4, 1), (2, 50257)];
    for (case, &(n, v)) in cases.iter().enumerate() {
        let shape = format!("N={n} V={v}");
        rep.case("cross_entropy", &shape, |rep| {
            let mut rng = Rng::new(case_seed(seed, 1200 + case as u64));
            let logits = randn(&mut rng, n * v, 3.0);
            let mut targets: Vec<u32> = (0..n).map(|_| rng.below(v) as u32).collect();
            targets[n - 1] = v as u32 - 1; // the last id
                                           // Weights in [0, 1.5), with zeros (masked tokens): row 0 and every third row.
            let weights: Vec<f32> = (0..n).map(|i| if i % 3 == 0 { 0.0 } else { 1.5 * rng.uniform() }).collect();
            let sentinel = vec![-42.0f32; n];

            // Oracle, without and with the backward.
            let (mut ce_logits, mut ce_losses) = (logits.clone(), sentinel.clone());
            cpu.cross_entropy(&mut ce_logits, &mut ce_losses, &targets, &weights, n, v, false);
            let mut grad = logits.clone();
            let mut losses = sentinel.clone();
            cpu.cross_entropy(&mut grad, &mut losses, &targets, &weights, n, v, true);

            // Device.
            let (d_t, d_w) = (k.upload_ids(&targets), k.upload(&weights));
            let (mut d_logits, mut d_losses) = (k.upload(&logits), k.upload(&sentinel));
            k.cross_entropy(&mut d_logits, &mut d_losses, &d_t, &d_w, n, v, false);
            let (k_fwd_logits, k_fwd_losses) = (k.download(&d_logits), k.download(&d_losses));
            let mut d_losses = k.upload(&sentinel);
            k.cross_entropy(&mut d_logits, &mut d_losses, &d_t, &d_w, n, v, true);
            let (k_grad, k_losses) = (k.download(&d_logits), k.download(&d_losses));

            // Tolerances. loss = w·(m + ln s − x_t): both sides sum V exponentials in f32 in
            // different orders with different exp implementations (the oracle's polynomial,
            // the device's expf), so ln s differs by a few·√V·2⁻²⁴ relative plus a few ulp:
            // ≤ ~1e-5 absolute on values of size ≲ 20 (logits of std 3, ln V ≤ 11), times
            // w < 1.5. 2e-6 relative + 3e-5 absolute per value. Zero weights give 0 exactly.
            let tol = Tol::Each { tol: 2e-6, floor: 0.0, abs: 3e-5 };
            rep.cmp("cross_entropy/loss", &shape, &k_fwd_losses, &ce_losses, tol, "2e-6 rel + 3e-5 abs per value");
            rep.cmp("cross_entropy/loss_bwd", &shape, &k_losses, &losses, tol, "the same with backward");
            // Without backward the logits are left bit for bit.
            rep.cmp(
                "cross_entropy/logits_kept",
                &shape,
                &k_fwd_logits,
                &logits,
                Tol::Bits,
                "untouched without backward",
            );
            // d = w·(p − onehot): p = e^(x − m)/s carries the relative error of s and of exp
            // (~1e-6), and p − 1 at the target cancels to an absolute error of w·δp: 2e-5
            // relative + 2e-6 absolute per value (w < 1.5). A wrong row, weight or target is
            // O(p) or O(w).
            let tol = Tol::Each { tol: 2e-5, floor: 0.0, abs: 2e-6 };
            rep.cmp("cross_entropy/dlogits", &shape, &k_grad, &grad, tol, "2e-5 rel + 2e-6 abs per value");
            // Zero-weight rows are exactly zero gradients on both sides.
            let zero_rows: Vec<f32> =
                (0..n).filter(|i| weights[*i] == 0.0).flat_map(|i| k_grad[i * v..(i + 1) * v].to_vec()).collect();
            let want = vec![0.0f32; zero_rows.len()];
            rep.cmp("cross_entropy/zero_weight", &shape, &zero_rows, &want, Tol::Exact, "w = 0 rows are 0");
        });
    }
}

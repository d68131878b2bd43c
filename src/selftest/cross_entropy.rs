//! Parity cases of the fused weighted cross-entropy, with and without the backward.

use super::{case_seed, randn, Report, Tol};
use crate::backend::cpu::CpuBackend;
use crate::backend::device::Device;
use crate::backend::kernel::KernelBackend;
use crate::backend::prelude::*;
use crate::backend::CrossEntropyShape;
use crate::util::rng::Rng;

pub(super) fn cases<D: Device>(k: &KernelBackend<D>, seed: u64, rep: &mut Report) {
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
            cpu.cross_entropy(&mut ce_logits, &mut ce_losses, &targets, &weights, CrossEntropyShape { n, v }, false);
            let mut grad = logits.clone();
            let mut losses = sentinel.clone();
            cpu.cross_entropy(&mut grad, &mut losses, &targets, &weights, CrossEntropyShape { n, v }, true);

            // Device.
            let (d_t, d_w) = (k.upload_ids(&targets), k.upload(&weights));
            let (mut d_logits, mut d_losses) = (k.upload(&logits), k.upload(&sentinel));
            k.cross_entropy(&mut d_logits, &mut d_losses, &d_t, &d_w, CrossEntropyShape { n, v }, false);
            let (k_fwd_logits, k_fwd_losses) = (k.download(&d_logits), k.download(&d_losses));
            let mut d_losses = k.upload(&sentinel);
            k.cross_entropy(&mut d_logits, &mut d_losses, &d_t, &d_w, CrossEntropyShape { n, v }, true);
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

//! Parity cases of GELU forward and backward, a small ragged case and one past the
//! elementwise grid cap.

use super::optim::BIG;
use super::{case_seed, nans, nans_bf16, randn, rounded, upload_bf16, Report, Tol};
use crate::backend::cpu::CpuBackend;
use crate::backend::device::Device;
use crate::backend::kernel::KernelBackend;
use crate::backend::prelude::*;
use crate::util::rng::Rng;

pub(super) fn cases<D: Device>(kb: &KernelBackend<D>, seed: u64, rep: &mut Report) {
    let cpu = CpuBackend::new(Some(1));
    for (case, &n) in [37usize * 48, BIG].iter().enumerate() {
        let shape = format!("N={n}");
        let mut rng = Rng::new(case_seed(seed, 1600 + case as u64));
        // x ~ N(0, 2²) (pre-activations of a trained GPT-2 are within a few units) plus the
        // edges: ±0, tiny, where tanh saturates in f32 (|u| > 9) and far beyond.
        let mut x = randn(&mut rng, n, 2.0);
        let edges = [0.0f32, -0.0, 1e-6, -1e-6, 3.0, -3.0, 6.0, -6.0, 10.0, -10.0, 50.0, -50.0];
        x[..edges.len()].copy_from_slice(&edges);
        let dy = randn(&mut rng, n, 1.0);
        let d_x = kb.upload(&x);

        rep.case("gelu_forward", &shape, |rep| {
            let mut want = vec![0.0; n];
            cpu.gelu_forward(&mut want, &x);
            let mut d_out = kb.upload(&nans(n));
            kb.gelu_forward(&mut d_out, &d_x);
            // Tolerance. out = 0.5·x·(1 + tanh u): the oracle's tanh is within 2e-7 absolute
            // of the true one, tanhf within ~2 ulps (≤ 1.2e-7), so out differs by ≤ 0.5·|x|·
            // 3.2e-7 plus a few ulps of |out|; where x < 0 and out → 0 that error is absolute,
            // not relative. Per element 2e-6·max(|out|, 1) covers |x| ≤ 6 (beyond, tanh is ±1
            // exactly on both sides; the edges ±10, ±50 check it). A wrong constant (0.0447
            // for 0.044715) moves out by ≥ 1e-4.
            let tol = Tol::Each { tol: 2e-6, floor: 1.0, abs: 0.0 };
            rep.cmp("gelu_forward", &shape, &kb.download(&d_out), &want, tol, "per value, of max(|out|, 1)");
        });

        rep.case("gelu_backward", &shape, |rep| {
            let mut want = dy.clone();
            cpu.gelu_backward(&mut want, &x);
            let mut d_d = kb.upload(&dy);
            kb.gelu_backward(&mut d_d, &d_x);
            // Tolerance. gelu'(x) = 0.5(1 + th) + 0.5·x·(1 − th²)·du: a tanh error δ ≤ 3.2e-7
            // (as above) moves it by ≤ 0.5δ + |x|·|th|·du·δ ≲ 10δ ≈ 3e-6 at |x| ≈ 4 (du ≈
            // 2.5), less elsewhere (1 − th² → 0 beyond), times |dy| ≲ 5 (the largest of
            // 267k normal draws): ≤ 1.6e-5 absolute where d is near 0. Per element:
            // 2e-5·max(|d|, 1). A sign error in the sech² term moves it by O(0.1).
            let tol = Tol::Each { tol: 2e-5, floor: 1.0, abs: 0.0 };
            rep.cmp("gelu_backward", &shape, &kb.download(&d_d), &want, tol, "per value, of max(|d|, 1)");
        });
    }
}

/// The bf16 entry points: bf16 input and output (GELU in place of the MLP's hidden layer),
/// f32 arithmetic. Each output is compared with the oracle on the same bf16 inputs, rounded:
/// the two f32 results differ as in the f32 cases (≤ 2e-6 of max(|out|, 1)), so after
/// rounding they agree or are one bf16 ulp apart (2⁻⁷ of the value); the bound is one ulp
/// of max(|out|, 1e-3) per value.
pub(super) fn bf16_cases<D: Device>(kb: &KernelBackend<D>, seed: u64, rep: &mut Report) {
    let cpu = CpuBackend::new(Some(1));
    for (case, &n) in [37usize * 48 + 3, BIG].iter().enumerate() {
        let shape = format!("N={n}");
        let mut rng = Rng::new(case_seed(seed, 2700 + case as u64));
        let (x, d_x) = upload_bf16(kb, &randn(&mut rng, n, 2.0));
        let (dy, _) = upload_bf16(kb, &randn(&mut rng, n, 1.0));
        let tol = Tol::Each { tol: 7.9e-3, floor: 1e-3, abs: 2e-6 };
        rep.case("gelu_forward_bf16", &shape, |rep| {
            let mut want = vec![0.0; n];
            cpu.gelu_forward(&mut want, &x);
            let mut d_out = nans_bf16(kb, n);
            kb.gelu_forward(&mut d_out, &d_x);
            rep.cmp("gelu_forward_bf16", &shape, &kb.download(&d_out), &rounded(&want), tol, "one bf16 ulp per value");
        });
        rep.case("gelu_backward_bf16", &shape, |rep| {
            let mut want = dy.clone();
            cpu.gelu_backward(&mut want, &x);
            let (_, mut d_d) = upload_bf16(kb, &dy);
            kb.gelu_backward(&mut d_d, &d_x);
            let tol = Tol::Each { tol: 7.9e-3, floor: 1e-3, abs: 2e-5 };
            rep.cmp("gelu_backward_bf16", &shape, &kb.download(&d_d), &rounded(&want), tol, "one bf16 ulp per value");
        });
    }
}

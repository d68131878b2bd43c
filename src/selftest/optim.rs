//! Parity cases of the optimizer's ops: AdamW, the global norm and scaling, each on a small
//! ragged case and one past the elementwise grid cap ([`BIG`]).

use super::{case_seed, randn, Report, Tol};
use crate::backend::cpu::CpuBackend;
use crate::backend::device::Device;
use crate::backend::kernel::KernelBackend;
use crate::backend::launch::{ELEMENTWISE_MAX_BLOCKS, ELEMENTWISE_THREADS};
use crate::backend::prelude::*;
use crate::backend::AdamWStep;
use crate::util::rng::Rng;

/// More values than one elementwise launch covers, so the grid is capped and the
/// grid-stride loops run a second iteration.
pub(super) const BIG: usize = (ELEMENTWISE_MAX_BLOCKS * ELEMENTWISE_THREADS) as usize + 5_003;

pub(super) fn cases<D: Device>(kb: &KernelBackend<D>, seed: u64, rep: &mut Report) {
    adamw_cases(kb, seed, rep);
    global_norm_cases(kb, seed, rep);
    scale_cases(kb, seed, rep);
}

fn adamw_cases<D: Device>(kb: &KernelBackend<D>, seed: u64, rep: &mut Report) {
    let cpu = CpuBackend::new(Some(1));
    let base = AdamWStep { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, step: 1, grad_scale: 1.0 };
    // Step 1 (bias corrections 0.1 and 0.05, the largest), a later step with clipping folded
    // in (grad_scale) and no weight decay (biases), and a large N for the grid-stride loop.
    let configs = [
        (37usize * 48, base),
        (1001, AdamWStep { step: 7, grad_scale: 0.37, weight_decay: 0.0, lr: 3e-4, ..base }),
        (BIG, AdamWStep { step: 1000, ..base }),
    ];
    for (case, &(n, h)) in configs.iter().enumerate() {
        let shape = format!("N={n} step={} wd={} grad_scale={}", h.step, h.weight_decay, h.grad_scale);
        rep.case("adamw", &shape, |rep| {
            let mut rng = Rng::new(case_seed(seed, 1800 + case as u64));
            let p0 = randn(&mut rng, n, 1.0);
            let g = randn(&mut rng, n, 1.0);
            // Moments as after some steps: m ~ 0.1·N(0,1), v ~ |0.01·N(0,1)| (v ≥ 0), with a few
            // zeros (a fresh state, as at step 1).
            let mut m0 = randn(&mut rng, n, 0.1);
            let mut v0: Vec<f32> = randn(&mut rng, n, 0.01).into_iter().map(f32::abs).collect();
            if h.step == 1 {
                m0.fill(0.0);
                v0.fill(0.0);
            }
            let (mut p, mut m, mut v) = (p0.clone(), m0.clone(), v0.clone());
            cpu.adamw(&mut p, &g, &mut m, &mut v, h);
            let (mut d_p, d_g, mut d_m, mut d_v) = (kb.upload(&p0), kb.upload(&g), kb.upload(&m0), kb.upload(&v0));
            kb.adamw(&mut d_p, &d_g, &mut d_m, &mut d_v, h);
            // Tolerances. Same formula, same operation order, the bias corrections computed
            // identically on the host; what differs is FMA contraction on a GPU (b1·m + (1−b1)·g
            // as one fma: ≤ 1 ulp of each term) and device vs host division/sqrt (both
            // correctly rounded without fast-math). m and v: a few ulps of the larger term,
            // 1e-6 per element of max(|m|, 1e-3) (m can cancel to near 0; its terms are
            // ≥ 1e-3 typically). The update lr·m̂/(√v̂ + eps) then carries a relative error of
            // a few ulps, lr ≤ 1e-3 times that is far below an ulp of |p| ~ 1: param to 3e-7
            // per element of max(|p|, 1e-2) (≈ 2.5 ulps). A missing bias correction or decay
            // moves p by ≥ 1e-4.
            let tol = Tol::Each { tol: 1e-6, floor: 1e-3, abs: 0.0 };
            rep.cmp("adamw/m", &shape, &kb.download(&d_m), &m, tol, "per value, of max(|m|, 1e-3)");
            let tol = Tol::Each { tol: 1e-6, floor: 1e-5, abs: 0.0 };
            rep.cmp("adamw/v", &shape, &kb.download(&d_v), &v, tol, "per value, of max(|v|, 1e-5)");
            let tol = Tol::Each { tol: 3e-7, floor: 1e-2, abs: 0.0 };
            rep.cmp("adamw/param", &shape, &kb.download(&d_p), &p, tol, "per value, of max(|p|, 1e-2)");
        });
    }
}

fn global_norm_cases<D: Device>(kb: &KernelBackend<D>, seed: u64, rep: &mut Report) {
    let cpu = CpuBackend::new(Some(1));
    // Buffer lengths: ragged small ones with an empty one among them (no partials, no launch);
    // one buffer of one value; a big one whose partial launch has the full 1024 blocks, each
    // thread looping twice, next to small ones (partial slots at offsets).
    let cases: [&[usize]; 3] = [&[1776, 0, 37, 300], &[1], &[45, BIG, 7]];
    for (case, lens) in cases.iter().enumerate() {
        let shape = format!("lens={lens:?}");
        rep.case("global_norm", &shape, |rep| {
            let mut rng = Rng::new(case_seed(seed, 1900 + case as u64));
            let host: Vec<Vec<f32>> = lens.iter().map(|&n| randn(&mut rng, n, 0.3)).collect();
            let want = cpu.global_norm(&host.iter().collect::<Vec<_>>());
            let dev: Vec<_> = host.iter().map(|h| kb.upload(h)).collect();
            let got = kb.global_norm(&dev.iter().collect::<Vec<_>>());
            // Tolerance. The oracle sums squares in f64, the device in f32: each thread adds
            // its ≤ 2 grid-stride values, then warp, block and final block trees (depth ≤ 5 +
            // 5 + 10 + ... ≈ 25 additions per value): relative error ≤ 25·2⁻²⁴ ≈ 1.5e-6 of the
            // sum of positive terms, halved by the sqrt. 2e-6 relative; a dropped block or
            // buffer moves the norm by ≥ 1e-3 here.
            let tol = Tol::Each { tol: 2e-6, floor: 0.0, abs: 0.0 };
            rep.cmp("global_norm", &shape, &[got], &[want], tol, "relative, f32 tree vs f64 sum");
        });
    }
    rep.case("global_norm", "no values", |rep| {
        let empty = kb.upload(&[]);
        let (none, zero) = (kb.global_norm(&[]), kb.global_norm(&[&empty, &empty]));
        rep.check("global_norm", "no values", none == 0.0 && zero == 0.0, "no buffers / empty buffers → 0");
    });
}

fn scale_cases<D: Device>(kb: &KernelBackend<D>, seed: u64, rep: &mut Report) {
    let cpu = CpuBackend::new(Some(1));
    for (case, &(n, alpha)) in [(1001usize, 0.37f32), (BIG, -2.5)].iter().enumerate() {
        let shape = format!("N={n} alpha={alpha}");
        rep.case("scale", &shape, |rep| {
            let mut rng = Rng::new(case_seed(seed, 2000 + case as u64));
            let x = randn(&mut rng, n, 1.0);
            let mut want = x.clone();
            cpu.scale(&mut want, alpha);
            let mut d_x = kb.upload(&x);
            kb.scale(&mut d_x, alpha);
            // One correctly rounded multiply on both sides: bit-identical.
            rep.cmp("scale", &shape, &kb.download(&d_x), &want, Tol::Bits, "one multiply: exact");
        });
    }
}

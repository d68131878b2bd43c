//! Parity cases of the f32 ↔ bf16 conversions (`kernels/convert.cu`) against the host's
//! rounding (`precision::f32_to_bf16`), bit for bit: a ragged length (packs of 8 plus a scalar
//! tail) and one past the elementwise grid cap, with the special values in front.

use super::optim::BIG;
use super::{case_seed, nans, randn, Report, Tol};
use crate::backend::device::Device;
use crate::backend::kernel::KernelBackend;
use crate::backend::precision::round_bf16;
use crate::backend::prelude::*;
use crate::backend::Dtype;
use crate::util::rng::Rng;

pub(super) fn cases<D: Device>(k: &KernelBackend<D>, seed: u64, rep: &mut Report) {
    for (case, &n) in [8usize * 37 + 5, BIG].iter().enumerate() {
        let shape = format!("N={n}");
        let mut rng = Rng::new(case_seed(seed, 2600 + case as u64));
        let mut x = randn(&mut rng, n, 3.0);
        // Ties (1 + 2⁻⁸ rounds down to even, 1 + 3·2⁻⁸ up), the largest finite value (rounds
        // to ∞), subnormals, signed zeros, infinities, NaN.
        let edges = [
            1.0 + 2f32.powi(-8),
            1.0 + 3.0 * 2f32.powi(-8),
            f32::MAX,
            -f32::MAX,
            1e-40,
            -1e-40,
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ];
        x[..edges.len()].copy_from_slice(&edges);
        let want: Vec<f32> = x.iter().map(|&v| round_bf16(v)).collect();
        rep.case("convert", &shape, |rep| {
            let src = k.upload(&x);
            let mut d16 = k.alloc_as(n, Dtype::Bf16);
            k.copy(&mut d16, &src);
            rep.cmp("convert/f32_bf16", &shape, &k.download(&d16), &want, Tol::Bits, "round to nearest even");
            let mut back = k.upload(&nans(n));
            k.copy(&mut back, &d16);
            rep.cmp("convert/bf16_f32", &shape, &k.download(&back), &want, Tol::Bits, "exact widening");
        });
    }
}

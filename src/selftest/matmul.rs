//! Parity cases of the matrix products (every transpose, bias and accumulate combination).

use super::{case_seed, compare, randn, upload_bf16, Report, Tol};
use crate::backend::cpu::CpuBackend;
use crate::backend::device::Device;
use crate::backend::kernel::KernelBackend;
use crate::backend::prelude::*;
use crate::backend::Dtype;
use crate::backend::Gemm;
use crate::util::rng::Rng;

pub(super) fn cases<D: Device>(k: &KernelBackend<D>, seed: u64, rep: &mut Report) {
    let cpu = CpuBackend::new(Some(1));
    // (m, n, k): ragged sizes (not multiples of any tile), one GPT-2-like product (C = 768),
    // a skinny one; each with the four transpose combinations, with and without bias and
    // accumulation.
    let shapes = [(37usize, 53usize, 29usize), (1, 7, 300), (64, 768, 768), (130, 33, 1)];
    let bf16 = k.precision().dtype == Dtype::Bf16;
    let op = if bf16 { "matmul_bf16" } else { "matmul" };
    for (case, &(m, n, kk)) in shapes.iter().enumerate() {
        let shape = format!("m={m} n={n} k={kk} (8 configs)");
        rep.case(op, &shape, |rep| {
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
                    // bf16 products round both operands to 8 significant bits (unit roundoff
                    // 2⁻⁸ each), so a product errs by ≤ 2⁻⁷ ≈ 7.8e-3 of |a||b|: the bound is
                    // 8e-3 (k = 1 products reach 6.5e-3). A transpose mistake is O(1/√k).
                    let bound = if bf16 { 8e-3 } else { 2e-3 };
                    let mut row = compare(op, &shape, &got, &want, Tol::Exact, "");
                    let worst =
                        ratio
                            .iter()
                            .fold(0.0f64, |m, r| if r.is_nan() { f64::INFINITY } else { m.max(r.abs() as f64) });
                    let what = format!("trans_a={ta} trans_b={tb} bias={with_bias} acc={acc}");
                    row.max_rel = worst;
                    row.tol = bound;
                    row.pass = worst <= bound;
                    let kind = if bf16 { "bf16" } else { "TF32" };
                    row.note = if row.pass {
                        format!("per value, of Σ|a||b| ({kind} bound); worst {what}")
                    } else {
                        format!("{what}: error {worst:.2e} of Σ|a||b| exceeds the {kind} bound")
                    };
                    rep.push(row);
                }
            }
        });
    }
}

pub(super) fn bias_backward_cases<D: Device>(kb: &KernelBackend<D>, seed: u64, rep: &mut Report) {
    let cpu = CpuBackend::new(Some(1));
    // (rows, cols): 37 columns = two 32-column blocks, the second with 5 live lanes; 45 rows
    // not a multiple of the 8 row groups; 300 columns (10 blocks) over 7 rows (some row groups
    // idle); one row.
    let cases = [(45usize, 37usize), (7, 300), (1, 48)];
    for (case, &(rows, cols)) in cases.iter().enumerate() {
        let shape = format!("rows={rows} cols={cols}");
        rep.case("bias_backward", &shape, |rep| {
            let mut rng = Rng::new(case_seed(seed, 1700 + case as u64));
            let dout = randn(&mut rng, rows * cols, 1.0);
            let db0 = randn(&mut rng, cols, 1.0);
            let mut want = db0.clone();
            cpu.bias_backward(&mut want, &dout, rows, cols);
            let (mut d_db, d_dout) = (kb.upload(&db0), kb.upload(&dout));
            kb.bias_backward(&mut d_db, &d_dout, rows, cols);
            // Tolerance. Each value is dbias₀ + a rows-term f32 sum, which the kernel adds as 8
            // strided partial sums then in group order, the oracle in row order: reordering
            // moves it by ≤ rows·2⁻²⁴·Σ|terms| ≈ 45·6e-8·37 ≈ 1e-4 in the worst case, ~√rows
            // ulps of Σ|terms| typically. Per element relative to Σ|terms| would be tightest;
            // of the tensor's scale (≈ 2√rows): 2e-6. A dropped row moves a value by O(1).
            let tol = Tol::Scale { tol: 2e-6, floor: 1.0 };
            rep.cmp("bias_backward", &shape, &kb.download(&d_db), &want, tol, "of the scale (sum order)");
        });
    }
}

/// `bias_backward_bf16`: the gradient rows stored as bf16 (dqkv, the MLP's hidden gradient),
/// the bias gradient f32. The oracle sums the same bf16 values in f32, so the f32 bound holds.
pub(super) fn bias_backward_bf16_cases<D: Device>(kb: &KernelBackend<D>, seed: u64, rep: &mut Report) {
    let cpu = CpuBackend::new(Some(1));
    for (case, &(rows, cols)) in [(45usize, 37usize), (7, 300)].iter().enumerate() {
        let shape = format!("rows={rows} cols={cols}");
        rep.case("bias_backward_bf16", &shape, |rep| {
            let mut rng = Rng::new(case_seed(seed, 3000 + case as u64));
            let (dout, d_dout) = upload_bf16(kb, &randn(&mut rng, rows * cols, 1.0));
            let db0 = randn(&mut rng, cols, 1.0);
            let mut want = db0.clone();
            cpu.bias_backward(&mut want, &dout, rows, cols);
            let mut d_db = kb.upload(&db0);
            kb.bias_backward(&mut d_db, &d_dout, rows, cols);
            let tol = Tol::Scale { tol: 2e-6, floor: 1.0 };
            rep.cmp("bias_backward_bf16", &shape, &kb.download(&d_db), &want, tol, "of the scale (sum order)");
        });
    }
}

//! Matrix products, and the bias gradient of a linear layer. Products with a few rows (decode
//! steps) take the streaming kernels of [`super::skinny`]; the rest go through the `gemm`
//! crate, which picks SIMD kernels for the host CPU and splits large products across rayon's
//! pool. Each output element is reduced by one thread
//! in a fixed order, so results do not depend on scheduling.

use super::CpuBackend;
use crate::backend::ops::MatmulOps;
use crate::backend::shapes::Gemm;
use rayon::prelude::*;

/// `out (m,n) = op(a) · op(b) (+ bias) (+ out)` on row-major slices; see [`Gemm`].
pub fn matmul(out: &mut [f32], a: &[f32], b: &[f32], bias: Option<&[f32]>, g: Gemm) {
    let Gemm { m, n, k, trans_a, trans_b, accumulate } = g;
    assert_eq!(out.len(), m * n, "matmul: out has {} values, expected m·n = {m}·{n}", out.len());
    assert_eq!(a.len(), m * k, "matmul: a has {} values, expected m·k = {m}·{k}", a.len());
    assert_eq!(b.len(), k * n, "matmul: b has {} values, expected k·n = {k}·{n}", b.len());
    let mut read_dst = accumulate;
    if let Some(bias) = bias {
        assert_eq!(bias.len(), n, "matmul: bias has {} values, expected n = {n}", bias.len());
        for row in out.chunks_exact_mut(n) {
            if accumulate {
                row.iter_mut().zip(bias).for_each(|(o, b)| *o += b);
            } else {
                row.copy_from_slice(bias);
            }
        }
        read_dst = true;
    }
    if k == 0 {
        if !read_dst {
            out.fill(0.0);
        }
        return;
    }
    if super::skinny::matmul(out, a, b, g, read_dst) {
        return;
    }
    // Strides: element (i, j) of a row-major (r, c) matrix is at i·c + j; a transposed
    // operand swaps the row and column strides.
    let (a_rs, a_cs) = if trans_a { (1, m as isize) } else { (k as isize, 1) };
    let (b_rs, b_cs) = if trans_b { (1, k as isize) } else { (n as isize, 1) };
    let threads = if m * n * k < 64 * 64 * 64 { 1 } else { rayon::current_num_threads() };
    let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: the asserts above prove every index the strides reach is inside `out`, `a` and
    // `b`; `out` is exclusively borrowed, so it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            read_dst,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// A matrix operand of [`product`] in memory: element (i, j) at `ptr + i·rs + j·cs`, so a
/// head's slice of a wider row (row stride 3C) or a transpose (swapped strides) needs no copy.
#[derive(Clone, Copy)]
pub(super) struct View {
    pub ptr: *const f32,
    pub rs: isize,
    pub cs: isize,
}

/// `dst (m,n) = a (m,k) · b (k,n)` (`+ dst` when `accumulate`), `dst` row-major with row
/// stride `dst_rs`, on the calling thread: for ops that parallelise over independent products
/// themselves (attention's (batch, head) pairs).
///
/// # Safety
/// `a`, `b` and `dst` must be valid for every element their strides reach over (m,k), (k,n)
/// and (m,n), and `dst` must not overlap `a` or `b`.
pub(super) unsafe fn product(
    dst: *mut f32,
    dst_rs: usize,
    a: View,
    b: View,
    (m, n, k): (usize, usize, usize),
    accumulate: bool,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        a.ptr,
        a.cs,
        a.rs,
        b.ptr,
        b.cs,
        b.rs,
        1.0,
        1.0,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

/// `dbias (cols) += Σ_rows dout (rows, cols)`, summed in row order per column stripe.
fn bias_backward(dbias: &mut [f32], dout: &[f32], cols: usize) {
    const STRIPE: usize = 256;
    dbias.par_chunks_mut(STRIPE).enumerate().for_each(|(s, db)| {
        let (lo, hi) = (s * STRIPE, s * STRIPE + db.len());
        for row in dout.chunks_exact(cols) {
            for (d, x) in db.iter_mut().zip(&row[lo..hi]) {
                *d += x;
            }
        }
    });
}

impl MatmulOps for CpuBackend {
    fn matmul(&self, out: &mut Vec<f32>, a: &Vec<f32>, b: &Vec<f32>, bias: Option<&Vec<f32>>, g: Gemm) {
        self.run(|| matmul(out, a, b, bias.map(|v| v.as_slice()), g));
    }
    fn bias_backward(&self, dbias: &mut Vec<f32>, dout: &Vec<f32>, rows: usize, cols: usize) {
        assert!(
            dbias.len() == cols && dout.len() == rows * cols,
            "bias_backward: dbias holds {} values, dout {} (rows={rows}, cols={cols})",
            dbias.len(),
            dout.len()
        );
        self.run(|| bias_backward(dbias, dout, cols));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::rng::Rng;

    fn naive(a: &[f32], b: &[f32], g: Gemm) -> Vec<f32> {
        let mut out = vec![0.0f32; g.m * g.n];
        for i in 0..g.m {
            for j in 0..g.n {
                let mut s = 0.0f64;
                for p in 0..g.k {
                    let x = if g.trans_a { a[p * g.m + i] } else { a[i * g.k + p] };
                    let y = if g.trans_b { b[j * g.k + p] } else { b[p * g.n + j] };
                    s += x as f64 * y as f64;
                }
                out[i * g.n + j] = s as f32;
            }
        }
        out
    }

    #[test]
    fn all_transposes_match_naive_product() {
        let mut rng = Rng::new(3);
        for &(m, n, k) in &[(1, 1, 1), (7, 5, 3), (33, 65, 17), (70, 90, 80)] {
            for &(ta, tb) in &[(false, false), (true, false), (false, true), (true, true)] {
                let a: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
                let b: Vec<f32> = (0..k * n).map(|_| rng.normal()).collect();
                let bias: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
                let g = Gemm { m, n, k, trans_a: ta, trans_b: tb, accumulate: false };
                let want = naive(&a, &b, g);
                let mut out = vec![f32::NAN; m * n];
                matmul(&mut out, &a, &b, None, g);
                for (o, w) in out.iter().zip(&want) {
                    assert!((o - w).abs() <= 1e-4 * (1.0 + w.abs()), "{m}x{n}x{k} {ta} {tb}: {o} vs {w}");
                }
                // accumulate + bias: out = old + bias + product
                let old = out.clone();
                matmul(&mut out, &a, &b, Some(&bias), g.acc());
                for (i, o) in out.iter().enumerate() {
                    let w = old[i] + bias[i % n] + want[i];
                    assert!((o - w).abs() <= 1e-4 * (1.0 + w.abs()), "acc: {o} vs {w}");
                }
            }
        }
    }
}

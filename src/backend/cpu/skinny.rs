//! Products with few rows: `out (m,n) = a (m,k) · b` for m ≤ [`MAX_ROWS`], the shape of every
//! matmul in a decode step (one row per sequence still generating).
//!
//! Why not `gemm`: a general GEMM packs `b` into cache-sized panels before multiplying, which
//! pays for itself when each panel is reused by many rows of `a`. With a handful of rows the
//! packing is as much work as the product, and a decode step is bound by reading the weights
//! (`b`, 0.5 GB for GPT-2 124M) from memory: read them once, straight, and nothing else. These
//! kernels stream `b` once per group of [`GROUP`] rows and keep the partial sums in registers.
//!
//! Order: every output element is one thread's sum over k in a fixed order (8 lanes, then a
//! fixed horizontal sum for `a·bᵀ`), so results do not depend on scheduling or thread count.
//! They do differ in the last bits from `gemm`'s order; both are f32 products of the same
//! values.

use crate::backend::shapes::Gemm;
#[cfg(target_arch = "x86_64")]
use rayon::prelude::*;

/// The most rows a product may have to take this path.
const MAX_ROWS: usize = 16;
/// Rows of `a` whose partial sums share registers (and one pass over `b`).
const GROUP: usize = 4;
/// Rows of `b` per block in `a·b` (see `nn_columns`): 64 rows of a 256-column task are 64 KB,
/// which the row groups after the first re-read from L2.
const K_BLOCK: usize = 64;
/// Columns of `out` per parallel task in `a·b`, and rows of `b` per task in `a·bᵀ`: enough
/// work per task to amortise the scheduling, small enough to share 2–16 threads evenly.
const TASK_COLS: usize = 256;
const TASK_ROWS: usize = 64;

/// Whether the host can run these kernels (x86-64 with AVX2 and FMA).
fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `out (m,n) (+)= a · op(b)` for a product with m ≤ [`MAX_ROWS`] rows, `a` not transposed
/// (`out` already holds any bias; it is added to when `read_dst`). Returns false, touching
/// nothing, when the product does not fit this path or the host lacks AVX2/FMA: the caller
/// then uses `gemm`. Sizes are the caller's to check.
pub fn matmul(out: &mut [f32], a: &[f32], b: &[f32], g: Gemm, read_dst: bool) -> bool {
    let Gemm { m, n, k, trans_a, trans_b, .. } = g;
    if m == 0 || m > MAX_ROWS || trans_a || k == 0 || !available() {
        return false;
    }
    debug_assert!(out.len() == m * n && a.len() == m * k && b.len() == k * n);
    #[cfg(target_arch = "x86_64")]
    {
        let ops = x86::Operands { out: out.as_mut_ptr(), a: a.as_ptr(), b: b.as_ptr(), m, n, k, read_dst };
        // Tasks split the columns of `out`: stripes of a·b's columns, runs of bᵀ's.
        let per = if trans_b { TASK_ROWS } else { TASK_COLS };
        (0..n.div_ceil(per)).into_par_iter().for_each(|t| {
            let cols = (t * per, ((t + 1) * per).min(n));
            // SAFETY: AVX2 and FMA are present (`available`); `Operands` holds the sizes the
            // caller checked; each task writes only its own columns of `out`, so no two tasks
            // write the same element, and the loop joins before `out`'s borrow ends.
            unsafe {
                if trans_b {
                    x86::nt_columns(ops, cols)
                } else {
                    x86::nn_columns(ops, cols)
                }
            }
        });
    }
    true
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{GROUP, K_BLOCK};
    use std::arch::x86_64::*;

    /// One product's operands as raw pointers, shared by the parallel tasks: `a (m,k)`, `b`
    /// (k,n) or, transposed, (n,k), and `out (m,n)`, all row-major.
    #[derive(Clone, Copy)]
    pub(super) struct Operands {
        pub out: *mut f32,
        pub a: *const f32,
        pub b: *const f32,
        pub m: usize,
        pub n: usize,
        pub k: usize,
        pub read_dst: bool,
    }
    // SAFETY: tasks write disjoint columns of `out` and only read `a` and `b`; the buffers
    // outlive the parallel loop, which joins before their borrows end.
    unsafe impl Send for Operands {}
    unsafe impl Sync for Operands {}

    /// Columns j0..j1 of `out` = `a · b`, in blocks of [`K_BLOCK`] rows of `b`: within a
    /// block, 16 columns at a time and GROUP rows of `a` at a time with their partial sums in
    /// 2·GROUP registers, k in order; each block's sums are added to `out` in block order.
    ///
    /// Why blocks: `b`'s rows are n·4 bytes apart (9 KB for GPT-2's c_attn), so running down
    /// all k rows for one 16-column stripe touches a new page per row and defeats the
    /// prefetchers; a block of rows is read as K_BLOCK contiguous (j1 − j0)-wide segments.
    ///
    /// # Safety
    /// AVX2 and FMA must be present, the pointers must hold the sizes `o` states, j1 ≤ n.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn nn_columns(o: Operands, (j0, j1): (usize, usize)) {
        let Operands { out, a, b, m, n, k, read_dst } = o;
        for p0 in (0..k).step_by(K_BLOCK) {
            let ps = (p0, (p0 + K_BLOCK).min(k));
            // The first block writes `out` (or adds to it with read_dst), later ones add.
            let add = read_dst || p0 > 0;
            let mut j = j0;
            while j + 16 <= j1 {
                for i0 in (0..m).step_by(GROUP) {
                    match m - i0 {
                        1 => nn_tile::<1>(o, i0, j, ps, add),
                        2 => nn_tile::<2>(o, i0, j, ps, add),
                        3 => nn_tile::<3>(o, i0, j, ps, add),
                        _ => nn_tile::<GROUP>(o, i0, j, ps, add),
                    }
                }
                j += 16;
            }
            // The last (j1 − j0) mod 16 columns one at a time, k in order.
            for jj in j..j1 {
                for r in 0..m {
                    let mut s = 0.0f32;
                    for p in ps.0..ps.1 {
                        s = (*a.add(r * k + p)).mul_add(*b.add(p * n + jj), s);
                    }
                    let dst = out.add(r * n + jj);
                    *dst = if add { *dst + s } else { s };
                }
            }
        }
    }

    /// Columns j..j+16 of rows i0..i0+R of `out` (+)= `a[·, p0..p1] · b[p0..p1, ·]`, in 2·R
    /// registers (R is a constant so the partial sums stay in registers).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn nn_tile<const R: usize>(o: Operands, i0: usize, j: usize, (p0, p1): (usize, usize), add: bool) {
        let Operands { out, a, b, n, k, .. } = o;
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        for p in p0..p1 {
            let bp = b.add(p * n + j);
            let (b0, b1) = (_mm256_loadu_ps(bp), _mm256_loadu_ps(bp.add(8)));
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = _mm256_set1_ps(*a.add((i0 + r) * k + p));
                acc[0] = _mm256_fmadd_ps(x, b0, acc[0]);
                acc[1] = _mm256_fmadd_ps(x, b1, acc[1]);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let dst = out.add((i0 + r) * n + j);
            let (mut s0, mut s1) = (acc[0], acc[1]);
            if add {
                s0 = _mm256_add_ps(_mm256_loadu_ps(dst), s0);
                s1 = _mm256_add_ps(_mm256_loadu_ps(dst.add(8)), s1);
            }
            _mm256_storeu_ps(dst, s0);
            _mm256_storeu_ps(dst.add(8), s1);
        }
    }

    /// Columns j0..j1 of `out` = `a · bᵀ` (rows j0..j1 of `b`): two rows of `b` against GROUP
    /// rows of `a` at a time, 8-lane partial sums over k, then a fixed horizontal sum.
    ///
    /// # Safety
    /// As [`nn_columns`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn nt_columns(o: Operands, (j0, j1): (usize, usize)) {
        let m = o.m;
        let mut j = j0;
        while j < j1 {
            // Two rows of b when there are two left; one (loaded twice) for the last.
            let cols = if j + 1 < j1 { 2 } else { 1 };
            for i0 in (0..m).step_by(GROUP) {
                match m - i0 {
                    1 => nt_tile::<1>(o, i0, j, cols),
                    2 => nt_tile::<2>(o, i0, j, cols),
                    3 => nt_tile::<3>(o, i0, j, cols),
                    _ => nt_tile::<GROUP>(o, i0, j, cols),
                }
            }
            j += cols;
        }
    }

    /// Elements (i0..i0+R, j..j+cols) of `out` = `a · bᵀ`, cols ≤ 2, in 2·R registers.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn nt_tile<const R: usize>(o: Operands, i0: usize, j: usize, cols: usize) {
        let Operands { out, a, b, n, k, read_dst, .. } = o;
        let kv = k - k % 8;
        let (b0, b1) = (b.add(j * k), b.add((j + cols - 1) * k));
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        let mut p = 0;
        while p < kv {
            let bv = [_mm256_loadu_ps(b0.add(p)), _mm256_loadu_ps(b1.add(p))];
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = _mm256_loadu_ps(a.add((i0 + r) * k + p));
                acc[0] = _mm256_fmadd_ps(x, bv[0], acc[0]);
                acc[1] = _mm256_fmadd_ps(x, bv[1], acc[1]);
            }
            p += 8;
        }
        for (r, acc) in acc.iter().enumerate() {
            for (c, &v) in acc.iter().enumerate().take(cols) {
                let mut s = hsum(v);
                for q in kv..k {
                    s = (*a.add((i0 + r) * k + q)).mul_add(*b.add((j + c) * k + q), s);
                }
                let dst = out.add((i0 + r) * n + j + c);
                *dst = if read_dst { *dst + s } else { s };
            }
        }
    }

    /// The 8 lanes summed in a fixed order: lane i + lane i+4, then pairs, then the two.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::rng::Rng;

    /// The product in f64, k in order.
    fn naive(a: &[f32], b: &[f32], g: Gemm) -> Vec<f64> {
        let mut out = vec![0.0f64; g.m * g.n];
        for i in 0..g.m {
            for j in 0..g.n {
                out[i * g.n + j] = (0..g.k)
                    .map(|p| a[i * g.k + p] as f64 * if g.trans_b { b[j * g.k + p] } else { b[p * g.n + j] } as f64)
                    .sum();
            }
        }
        out
    }

    #[test]
    fn few_rows_match_the_f64_product_and_accumulate() {
        if !available() {
            eprintln!("skipped: the host has no AVX2/FMA, so the product goes through gemm");
            return;
        }
        let mut rng = Rng::new(11);
        // Every row count up to MAX_ROWS (full and partial register groups), column counts
        // with and without a tail of 16 (a·b) or 2 (a·bᵀ), k with and without a tail of 8.
        for m in 1..=MAX_ROWS {
            for &(n, k) in &[(16, 8), (37, 19), (300, 64), (513, 77)] {
                for trans_b in [false, true] {
                    let g = Gemm { m, n, k, trans_a: false, trans_b, accumulate: false };
                    let a: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
                    let b: Vec<f32> = (0..k * n).map(|_| rng.normal()).collect();
                    let want = naive(&a, &b, g);
                    let mut out = vec![f32::NAN; m * n];
                    assert!(matmul(&mut out, &a, &b, g, false));
                    // f32 sums of k products of unit normals: error ~ k·2⁻²⁴·√k.
                    let tol = 1e-6 * k as f64;
                    for (o, w) in out.iter().zip(&want) {
                        assert!((*o as f64 - w).abs() <= tol * (1.0 + w.abs()), "{m}x{n}x{k} t={trans_b}: {o} vs {w}");
                    }
                    let old = out.clone();
                    assert!(matmul(&mut out, &a, &b, g, true));
                    for ((o, w), x) in out.iter().zip(&want).zip(&old) {
                        let w = w + *x as f64;
                        assert!((*o as f64 - w).abs() <= 2.0 * tol * (1.0 + w.abs()), "acc {m}x{n}x{k}: {o} vs {w}");
                    }
                }
            }
        }
    }

    #[test]
    fn other_shapes_are_left_to_gemm() {
        let (a, b) = (vec![1.0f32; 17 * 4], vec![1.0f32; 4 * 3]);
        let mut out = vec![7.0f32; 17 * 3];
        let g = Gemm { m: 17, n: 3, k: 4, trans_a: false, trans_b: false, accumulate: false };
        assert!(!matmul(&mut out, &a, &b, g, false), "17 rows is more than MAX_ROWS");
        let g = Gemm { m: 4, n: 3, k: 17, trans_a: true, trans_b: false, accumulate: false };
        let bt = vec![1.0f32; 17 * 3];
        assert!(!matmul(&mut out[..12], &a, &bt, g, false), "a transposed");
        assert!(out.iter().all(|&x| x == 7.0), "nothing written");
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        if !available() {
            return;
        }
        let mut rng = Rng::new(5);
        let (m, n, k) = (8, 1000, 96);
        let a: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.normal()).collect();
        for trans_b in [false, true] {
            let g = Gemm { m, n, k, trans_a: false, trans_b, accumulate: false };
            let run = |threads| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let mut out = vec![0.0f32; m * n];
                pool.install(|| matmul(&mut out, &a, &b, g, false));
                out
            };
            assert_eq!(run(1), run(3), "trans_b={trans_b}");
        }
    }
}

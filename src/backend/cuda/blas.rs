//! Row-major GEMMs ([`Gemm`]) on cuBLASLt, which is column-major.
//!
//! A row-major (r, c) matrix is the same memory as a column-major (c, r) one, its transpose.
//! So `out (m,n) = op(a)·op(b)` in row-major is `outᵀ (n,m) = op(b)ᵀ·op(a)ᵀ` in column-major:
//! cuBLASLt multiplies b by a with the dimensions swapped, and each operand's transpose flag
//! is the one [`Gemm`] gives it. The bias epilogue adds a vector over the rows of the
//! column-major result, which are the columns of the row-major `out`: exactly [`Gemm`]'s bias.
//! f32 data, TF32 tensor-core compute (cudarc's choice for f32), f32 accumulation.

use std::sync::Arc;

use cudarc::cublaslt::{CudaBlasLT, Matmul, MatmulConfig};
use cudarc::driver::{CudaSlice, CudaStream};

use super::CudaError;
use crate::backend::Gemm;

/// The cuBLASLt handle and workspace of one stream.
pub(super) struct Blas {
    lt: CudaBlasLT,
}

impl Blas {
    pub(super) fn new(stream: Arc<CudaStream>) -> Result<Self, CudaError> {
        Ok(Blas { lt: CudaBlasLT::new(stream)? })
    }

    /// `out = op(a)·op(b) (+ bias) (+ out)`; the caller checked the sizes.
    pub(super) fn gemm(
        &self,
        out: &mut CudaSlice<f32>,
        a: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
        bias: Option<&CudaSlice<f32>>,
        g: Gemm,
    ) -> Result<(), CudaError> {
        let Gemm { m, n, k, trans_a, trans_b, accumulate } = g;
        let dim = |x: usize| i64::try_from(x).expect("GEMM dimension fits in i64");
        // Column-major operand A' = op(b)ᵀ (n,k): b stored (k,n) row-major is already (n,k)
        // column-major with leading dimension n; stored (n,k) it must be transposed (ld k).
        // B' = op(a)ᵀ (k,m) likewise from a.
        let cfg = MatmulConfig {
            transa: trans_b,
            transb: trans_a,
            transc: false,
            m: n as u64,
            n: m as u64,
            k: k as u64,
            alpha: 1.0,
            lda: dim(if trans_b { k } else { n }),
            ldb: dim(if trans_a { m } else { k }),
            beta: if accumulate { 1.0 } else { 0.0 },
            ldc: dim(n),
            stride_a: None,
            stride_b: None,
            stride_c: None,
            stride_bias: None,
            batch_size: None,
        };
        // SAFETY: the caller checked out = m·n, a = m·k, b = k·n and bias = n values, which
        // is what these layouts address; out is a distinct allocation from a, b and bias.
        unsafe { self.lt.matmul(cfg, b, a, out, bias, None) }?;
        Ok(())
    }
}

//! Row-major GEMMs ([`Gemm`]) on cuBLASLt, which is column-major, at the precision
//! [`GemmTypes`] asks for.
//!
//! A row-major (r, c) matrix is the same memory as a column-major (c, r) one, its transpose.
//! So `out (m,n) = op(a)·op(b)` in row-major is `outᵀ (n,m) = op(b)ᵀ·op(a)ᵀ` in column-major:
//! cuBLASLt multiplies b by a with the dimensions swapped, and each operand's transpose flag
//! is the one [`Gemm`] gives it. The bias epilogue adds a vector over the rows of the
//! column-major result, which are the columns of the row-major `out`: exactly [`Gemm`]'s bias.
//!
//! Compute types: f32 operands with [`MatmulPrecision::F32`] use `CUBLAS_COMPUTE_32F_PEDANTIC`
//! (true f32 products, no TF32 or split tricks), with [`MatmulPrecision::Tf32`]
//! `CUBLAS_COMPUTE_32F_FAST_TF32`; bf16 operands use `CUBLAS_COMPUTE_32F` (bf16 tensor cores,
//! f32 accumulation) with an f32 or bf16 result. Scale type f32 throughout; the bias is f32.
//! The descriptors are built per call, as cudarc's own `matmul` does.

use std::ffi::c_void;
use std::mem::size_of;
use std::sync::Arc;

use cudarc::cublaslt::result as lt;
use cudarc::cublaslt::sys;
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut};

use super::CudaError;
use crate::backend::device::GemmTypes;
use crate::backend::precision::{Dtype, MatmulPrecision};
use crate::backend::Gemm;

/// cuBLASLt's workspace: NVIDIA recommends 32 MiB on Hopper (4 MiB before it).
const WORKSPACE_BYTES: usize = 32 << 20;

/// The cuBLASLt handle and workspace of one stream.
pub(super) struct Blas {
    handle: sys::cublasLtHandle_t,
    workspace: CudaSlice<u8>,
    stream: Arc<CudaStream>,
}

// SAFETY: the handle is used only through `&self` methods that enqueue on `stream`; cuBLASLt
// handles may be used from any thread as long as calls are not concurrent on one handle, and
// the device serialises its callers (one stream, one op at a time).
unsafe impl Send for Blas {}
// SAFETY: as for Send.
unsafe impl Sync for Blas {}

impl Drop for Blas {
    fn drop(&mut self) {
        // SAFETY: the handle was made in `new` and is destroyed only here.
        let _ = unsafe { lt::destroy_handle(self.handle) };
    }
}

fn data_type(d: Dtype) -> sys::cudaDataType {
    match d {
        Dtype::F32 => sys::cudaDataType_t::CUDA_R_32F,
        Dtype::Bf16 => sys::cudaDataType_t::CUDA_R_16BF,
    }
}

/// A matrix layout descriptor, destroyed when dropped.
struct Layout(sys::cublasLtMatrixLayout_t);

impl Layout {
    fn new(d: Dtype, rows: usize, cols: usize, ld: usize) -> Result<Self, CudaError> {
        let ld = i64::try_from(ld).expect("leading dimension fits in i64");
        Ok(Layout(lt::create_matrix_layout(data_type(d), rows as u64, cols as u64, ld)?))
    }
}

impl Drop for Layout {
    fn drop(&mut self) {
        // SAFETY: made by `Layout::new`, destroyed only here.
        let _ = unsafe { lt::destroy_matrix_layout(self.0) };
    }
}

/// A matmul descriptor, destroyed when dropped.
struct Desc(sys::cublasLtMatmulDesc_t);

impl Desc {
    /// # Safety
    /// `value` must be the attribute's C type.
    unsafe fn set<T>(&self, attr: sys::cublasLtMatmulDescAttributes_t, value: &T) -> Result<(), CudaError> {
        // SAFETY: the descriptor is live; `value` points at size_of::<T>() readable bytes of
        // the attribute's type (the caller's contract).
        unsafe { lt::set_matmul_desc_attribute(self.0, attr, value as *const T as *const c_void, size_of::<T>()) }?;
        Ok(())
    }
}

impl Drop for Desc {
    fn drop(&mut self) {
        // SAFETY: made in `gemm`, destroyed only here.
        let _ = unsafe { lt::destroy_matmul_desc(self.0) };
    }
}

/// A heuristic-preference descriptor, destroyed when dropped.
struct Pref(sys::cublasLtMatmulPreference_t);

impl Drop for Pref {
    fn drop(&mut self) {
        // SAFETY: made in `gemm`, destroyed only here.
        let _ = unsafe { lt::destroy_matmul_pref(self.0) };
    }
}

impl Blas {
    pub(super) fn new(stream: Arc<CudaStream>) -> Result<Self, CudaError> {
        let handle = lt::create_handle()?;
        // SAFETY: cuBLASLt only writes its scratch into the workspace; its contents never
        // matter, so it need not be initialised.
        let workspace = unsafe { stream.alloc::<u8>(WORKSPACE_BYTES) }?;
        Ok(Blas { handle, workspace, stream })
    }

    /// `out = op(a)·op(b) (+ bias) (+ out)` on `types`; the caller checked the sizes (in
    /// values of each operand's type) and that `out` is a distinct allocation from a, b, bias.
    pub(super) fn gemm(
        &self,
        out: &mut CudaSlice<f32>,
        a: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
        bias: Option<&CudaSlice<f32>>,
        g: Gemm,
        types: GemmTypes,
    ) -> Result<(), CudaError> {
        use sys::cublasLtMatmulDescAttributes_t as Attr;
        let Gemm { m, n, k, trans_a, trans_b, accumulate } = g;
        let compute = match (types.inputs, types.matmul) {
            (Dtype::Bf16, _) => sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            (Dtype::F32, MatmulPrecision::F32) => sys::cublasComputeType_t::CUBLAS_COMPUTE_32F_PEDANTIC,
            (Dtype::F32, MatmulPrecision::Tf32) => sys::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32,
        };
        // Column-major operand A' = op(b)ᵀ (n,k): b stored (k,n) row-major is already (n,k)
        // column-major with leading dimension n; stored (n,k) it must be transposed (ld k).
        // B' = op(a)ᵀ (k,m) likewise from a. C = D = outᵀ (n,m), ld n.
        let (a_rows, a_cols) = if trans_b { (k, n) } else { (n, k) };
        let (b_rows, b_cols) = if trans_a { (m, k) } else { (k, m) };
        let la = Layout::new(types.inputs, a_rows, a_cols, if trans_b { k } else { n })?;
        let lb = Layout::new(types.inputs, b_rows, b_cols, if trans_a { m } else { k })?;
        let lc = Layout::new(types.out, n, m, n)?;
        let desc = Desc(lt::create_matmul_desc(compute, sys::cudaDataType_t::CUDA_R_32F)?);
        let stream = &self.stream;
        let (bias_ptr, _bias_guard) = bias.map(|x| x.device_ptr(stream)).unzip();
        // SAFETY: each value is the attribute's documented type (i32 transposes, u32 epilogue,
        // a device pointer, a cudaDataType).
        unsafe {
            desc.set(Attr::CUBLASLT_MATMUL_DESC_TRANSA, &(trans_b as i32))?;
            desc.set(Attr::CUBLASLT_MATMUL_DESC_TRANSB, &(trans_a as i32))?;
            if let Some(p) = &bias_ptr {
                desc.set(Attr::CUBLASLT_MATMUL_DESC_EPILOGUE, &sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS)?;
                desc.set(Attr::CUBLASLT_MATMUL_DESC_BIAS_POINTER, p)?;
                desc.set(Attr::CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &sys::cudaDataType_t::CUDA_R_32F)?;
            }
        }
        let pref = Pref(lt::create_matmul_pref()?);
        // SAFETY: the preference descriptor is live; the value is a size_t.
        unsafe {
            lt::set_matmul_pref_attribute(
                pref.0,
                sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                &WORKSPACE_BYTES as *const usize as *const c_void,
                size_of::<usize>(),
            )
        }?;
        // SAFETY: every descriptor is live and describes the buffers passed below.
        let heuristic = unsafe { lt::get_matmul_algo_heuristic(self.handle, desc.0, la.0, lb.0, lc.0, lc.0, pref.0) }?;
        let (alpha, beta) = (1.0f32, if accumulate { 1.0f32 } else { 0.0 });
        let (pa, _ga) = b.device_ptr(stream);
        let (pb, _gb) = a.device_ptr(stream);
        let (pc, _gc) = out.device_ptr_mut(stream);
        let (pw, _gw) = self.workspace.device_ptr(stream);
        // SAFETY: the caller checked that out holds m·n, a m·k, b k·n values of their types
        // and bias n f32, which is what these layouts address; out does not alias the inputs;
        // the workspace holds WORKSPACE_BYTES; everything is enqueued on this stream.
        unsafe {
            lt::matmul(
                self.handle,
                desc.0,
                &alpha as *const f32 as *const c_void,
                &beta as *const f32 as *const c_void,
                pa as *const c_void,
                la.0,
                pb as *const c_void,
                lb.0,
                pc as *const c_void,
                lc.0,
                pc as *mut c_void,
                lc.0,
                &heuristic.algo,
                pw as *mut c_void,
                WORKSPACE_BYTES,
                stream.cu_stream() as *mut _,
            )
        }?;
        Ok(())
    }
}

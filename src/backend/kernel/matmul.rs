//! Matrix products through the device's GEMM (cuBLASLt on a GPU, the CPU oracle's GEMM under
//! emulation) and the linear layer's bias gradient (`kernels/matmul.cu`).

use super::{DeviceBuf, KernelBackend};
use crate::backend::device::{Device, GemmTypes};
use crate::backend::launch::{dim, run, DevPtr, KernelArgs, Launch, Launcher};
use crate::backend::ops::{MatmulOps, MemoryOps};
use crate::backend::precision::Dtype;
use crate::backend::shapes::Gemm;

/// Rows per column strip of `bias_backward_f32` (its `BIAS_ROW_GROUPS`): blocks of 32 × 8.
const BIAS_ROW_GROUPS: u32 = 8;

/// `bias_backward_{dtype}`: `dbias (cols, f32) += Σ_rows dout (rows, cols, dtype)`. One block per 32 columns
/// (⌈cols/32⌉ blocks of 32 × 8 threads; a warp reads 32 consecutive values of a row), each
/// column summed deterministically without atomics.
///
/// # Safety
/// `dbias` holds `cols` f32 (not overlapping `dout`), `dout` rows·cols values of `dtype`.
unsafe fn bias_backward<L: Launcher>(
    dev: &L,
    dbias: DevPtr,
    dout: DevPtr,
    dtype: Dtype,
    rows: usize,
    cols: usize,
) -> Result<(), L::Error> {
    if rows * cols == 0 {
        return Ok(());
    }
    let (ri, ci) = (dim("rows", rows), dim("cols", cols));
    let blocks = u32::try_from(cols.div_ceil(32)).expect("cols fit in an int");
    let mut args = KernelArgs::new();
    args.arg(&dbias).arg(&dout).arg(&ri).arg(&ci);
    // SAFETY: block b reads dout[:, 32b .. 32b + 32) (columns < cols) and updates the same
    // range of dbias; the caller guarantees the extents.
    let name = format!("bias_backward_{dtype}");
    unsafe { run(dev, &name, Launch::linear(blocks, 32 * BIAS_ROW_GROUPS), &mut args) }
}

impl<D: Device> MatmulOps for KernelBackend<D> {
    fn matmul(&self, out: &mut DeviceBuf<D>, a: &DeviceBuf<D>, b: &DeviceBuf<D>, bias: Option<&DeviceBuf<D>>, g: Gemm) {
        let shapes = format!("m={}, n={}, k={}, trans_a={}, trans_b={}", g.m, g.n, g.k, g.trans_a, g.trans_b);
        let ok =
            out.len == g.m * g.n && a.len == g.m * g.k && b.len == g.k * g.n && bias.map_or(true, |x| x.len == g.n);
        assert!(ok, "matmul ({shapes}): buffer sizes out={}, a={}, b={} do not match", out.len, a.len, b.len);
        if g.m * g.n == 0 {
            return;
        }
        if g.k == 0 {
            // An empty product: cuBLASLt rejects k = 0, and the result is just the bias and/or
            // the old `out`, so take the rare case through the host.
            let mut host = if g.accumulate { self.download(out) } else { vec![0.0; out.len] };
            if let Some(bias) = bias.map(|x| self.download(x)) {
                host.chunks_exact_mut(g.n).for_each(|row| row.iter_mut().zip(&bias).for_each(|(o, b)| *o += b));
            }
            self.write(out, &host);
            return;
        }
        if let Some(x) = bias {
            assert_eq!(x.dtype, Dtype::F32, "matmul ({shapes}): the bias is f32");
        }
        let p = self.precision;
        let bf16 = p.dtype == Dtype::Bf16 || a.dtype == Dtype::Bf16 || b.dtype == Dtype::Bf16;
        let types = GemmTypes { inputs: if bf16 { Dtype::Bf16 } else { Dtype::F32 }, out: out.dtype, matmul: p.matmul };
        // A bf16 product takes both operands as bf16: an f32 one (a GRN's output, a gradient
        // the loss wrote in f32) is rounded into a workspace first, as autocast casts it.
        let cast = |x: &DeviceBuf<D>, what: &str| {
            (bf16 && x.dtype == Dtype::F32).then(|| {
                let mut s = self.scratch_as(what, x.len, Dtype::Bf16);
                self.convert(&mut s, x);
                s
            })
        };
        let (ca, cb) = (cast(a, "matmul operand a"), cast(b, "matmul operand b"));
        let (a, b) = (ca.as_deref().unwrap_or(a), cb.as_deref().unwrap_or(b));
        let r = self.dev.gemm(out.mem_mut(), a.mem(), b.mem(), bias.map(|x| x.mem()), g, types);
        self.ok("matmul", &shapes, r);
    }

    fn bias_backward(&self, dbias: &mut DeviceBuf<D>, dout: &DeviceBuf<D>, rows: usize, cols: usize) {
        let shapes = format!("rows={rows}, cols={cols}");
        assert!(
            dbias.len == cols && dout.len == rows * cols,
            "bias_backward ({shapes}): dbias holds {} values, dout {}",
            dbias.len,
            dout.len
        );
        // The bias gradient is f32 (a master gradient); the rows may be bf16.
        let (db, d) = (self.ptr32_mut(dbias), self.ptr(dout));
        // SAFETY: dbias holds cols f32 and dout rows·cols (checked above), separate allocations.
        let r = unsafe { bias_backward(&*self.dev, db, d, dout.dtype, rows, cols) };
        self.ok("bias_backward", &shapes, r);
    }
}

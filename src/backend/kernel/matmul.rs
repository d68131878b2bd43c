//! Matrix products through the device's GEMM (cuBLASLt on a GPU, the CPU oracle's GEMM under
//! emulation) and the linear layer's bias gradient (`kernels/matmul.cu`).

use super::{DeviceBuf, KernelBackend};
use crate::backend::device::Device;
use crate::backend::launch::{dim, run, DevPtr, KernelArgs, Launch, Launcher};
use crate::backend::ops::{MatmulOps, MemoryOps};
use crate::backend::shapes::Gemm;

/// Rows per column strip of `bias_backward_f32` (its `BIAS_ROW_GROUPS`): blocks of 32 × 8.
const BIAS_ROW_GROUPS: u32 = 8;

/// `bias_backward_f32`: `dbias (cols) += Σ_rows dout (rows, cols)`. One block per 32 columns
/// (⌈cols/32⌉ blocks of 32 × 8 threads; a warp reads 32 consecutive values of a row), each
/// column summed deterministically without atomics.
///
/// # Safety
/// `dbias` holds `cols` f32 (not overlapping `dout`), `dout` rows·cols f32.
unsafe fn bias_backward<L: Launcher>(
    dev: &L,
    dbias: DevPtr,
    dout: DevPtr,
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
    unsafe { run(dev, "bias_backward_f32", Launch::linear(blocks, 32 * BIAS_ROW_GROUPS), &mut args) }
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
        let r = self.dev.gemm(out.mem_mut(), a.mem(), b.mem(), bias.map(|x| x.mem()), g);
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
        let (db, d) = (self.ptr_mut(dbias), self.ptr(dout));
        // SAFETY: dbias holds cols f32 and dout rows·cols (checked above), separate allocations.
        let r = unsafe { bias_backward(&*self.dev, db, d, rows, cols) };
        self.ok("bias_backward", &shapes, r);
    }
}

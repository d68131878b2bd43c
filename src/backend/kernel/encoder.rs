//! Token + position embeddings (`kernels/encoder.cu`): the training layout (B,T), and R rows
//! at their own positions for decoding. Elementwise with grid-stride loops. Shapes: N = B·T
//! rows, C channels, V rows of wte, P rows of wpe.

use super::{DeviceBuf, KernelBackend};
use crate::backend::device::Device;
use crate::backend::launch::{count, dim, run, DevPtr, KernelArgs, Launch, Launcher};
use crate::backend::ops::EncoderOps;
use crate::backend::shapes::{Btc, RowsC};

/// `encoder_forward_f32`: `out (N,C) = wte[ids[r]] + wpe[r % T]` for N = B·T rows; a row whose
/// id is ≥ V is NaN. Nothing is launched when N·C = 0.
///
/// # Safety
/// `out` holds N·C f32 and must not overlap the inputs; `ids` holds N u32, `wte` V·C f32,
/// `wpe` T·C f32.
unsafe fn encoder_forward<L: Launcher>(
    dev: &L,
    out: DevPtr,
    [ids, wte, wpe]: [DevPtr; 3],
    s: Btc,
    v: usize,
) -> Result<(), L::Error> {
    let (n, t, c) = (s.rows(), s.t, s.c);
    if n * c == 0 {
        return Ok(());
    }
    let (nn, ti, ci, vi) = (count(n), dim("T", t), dim("C", c), dim("V", v));
    let mut args = KernelArgs::new();
    args.arg(&out).arg(&ids).arg(&wte).arg(&wpe).arg(&nn).arg(&ti).arg(&ci).arg(&vi);
    // SAFETY: element i = r·C + c < N·C reads ids[r], wte[id, c] only for id < V, wpe[r % T, c]
    // and writes out[i]; the caller guarantees those extents.
    unsafe { run(dev, "encoder_forward_f32", Launch::elementwise(n * c), &mut args) }
}

/// `encoder_forward_at_f32`: `out (R,C) = wte[ids[r]] + wpe[pos[r]]`; a row whose id is ≥ V or
/// whose position is ≥ P is NaN. Nothing is launched when R·C = 0.
///
/// # Safety
/// `out` holds R·C f32 and must not overlap the inputs; `ids` and `pos` hold R u32, `wte` V·C
/// f32, `wpe` P·C f32.
unsafe fn encoder_forward_at<L: Launcher>(
    dev: &L,
    out: DevPtr,
    [ids, pos, wte, wpe]: [DevPtr; 4],
    s: RowsC,
    (v, p): (usize, usize),
) -> Result<(), L::Error> {
    let (r, c) = (s.rows, s.c);
    if r * c == 0 {
        return Ok(());
    }
    let (rr, ci, vi, pi) = (count(r), dim("C", c), dim("V", v), dim("P", p));
    let mut args = KernelArgs::new();
    args.arg(&out).arg(&ids).arg(&pos).arg(&wte).arg(&wpe).arg(&rr).arg(&ci).arg(&vi).arg(&pi);
    // SAFETY: element i = r·C + c reads ids[r], pos[r], and wte/wpe only at in-range rows, and
    // writes out[i]; the caller guarantees those extents.
    unsafe { run(dev, "encoder_forward_at_f32", Launch::elementwise(r * c), &mut args) }
}

/// `encoder_backward_f32`: `dwte[ids[r]] += dout[r]`, `dwpe[r % T] += dout[r]` with atomics
/// (the summation order of repeated tokens and of a position's B rows is not fixed on a GPU).
///
/// # Safety
/// `dwte` holds V·C f32, `dwpe` T·C f32 (distinct allocations, not overlapping the inputs),
/// `dout` N·C f32, `ids` N u32.
unsafe fn encoder_backward<L: Launcher>(
    dev: &L,
    [dwte, dwpe]: [DevPtr; 2],
    [dout, ids]: [DevPtr; 2],
    s: Btc,
    v: usize,
) -> Result<(), L::Error> {
    let (n, t, c) = (s.rows(), s.t, s.c);
    if n * c == 0 {
        return Ok(());
    }
    let (nn, ti, ci, vi) = (count(n), dim("T", t), dim("C", c), dim("V", v));
    let mut args = KernelArgs::new();
    args.arg(&dwte).arg(&dwpe).arg(&dout).arg(&ids).arg(&nn).arg(&ti).arg(&ci).arg(&vi);
    // SAFETY: element i reads dout[i], ids[r] and adds atomically into dwte[id, c] (id < V
    // only) and dwpe[r % T, c]; the caller guarantees those extents.
    unsafe { run(dev, "encoder_backward_f32", Launch::elementwise(n * c), &mut args) }
}

impl<D: Device> EncoderOps for KernelBackend<D> {
    fn encoder_forward(
        &self,
        out: &mut DeviceBuf<D>,
        ids: &DeviceBuf<D>,
        wte: &DeviceBuf<D>,
        wpe: &DeviceBuf<D>,
        s: Btc,
    ) {
        let Btc { b, t, c } = s;
        let shapes = format!("B={b}, T={t}, C={c}");
        let v = wte.len.checked_div(c).unwrap_or(0);
        assert!(
            out.len == b * t * c && ids.len == b * t && wte.len == v * c && wpe.len >= t * c,
            "encoder_forward ({shapes}): out {}, ids {}, wte {}, wpe {} values",
            out.len,
            ids.len,
            wte.len,
            wpe.len
        );
        let (o, i, te, pe) = (self.ptr32_mut(out), self.ptr32(ids), self.ptr32(wte), self.ptr32(wpe));
        // SAFETY: out holds B·T·C, ids B·T, wte V·C, wpe at least T·C values (checked above);
        // out is a separate allocation from the inputs. Ids ≥ V are not read through.
        let r = unsafe { encoder_forward(&*self.dev, o, [i, te, pe], s, v) };
        self.ok("encoder_forward", &shapes, r);
    }

    fn encoder_backward(
        &self,
        dwte: &mut DeviceBuf<D>,
        dwpe: &mut DeviceBuf<D>,
        dout: &DeviceBuf<D>,
        ids: &DeviceBuf<D>,
        s: Btc,
    ) {
        let Btc { b, t, c } = s;
        let shapes = format!("B={b}, T={t}, C={c}");
        let v = dwte.len.checked_div(c).unwrap_or(0);
        assert!(
            dout.len == b * t * c && ids.len == b * t && dwte.len == v * c && dwpe.len >= t * c,
            "encoder_backward ({shapes}): dwte {}, dwpe {}, dout {}, ids {} values",
            dwte.len,
            dwpe.len,
            dout.len,
            ids.len
        );
        let (te, pe, d, i) = (self.ptr32_mut(dwte), self.ptr32_mut(dwpe), self.ptr32(dout), self.ptr32(ids));
        // SAFETY: sizes checked above; dwte and dwpe are distinct allocations from each other
        // and from the inputs.
        let r = unsafe { encoder_backward(&*self.dev, [te, pe], [d, i], s, v) };
        self.ok("encoder_backward", &shapes, r);
    }

    /// Unlike the CPU oracle, which panics on an id ≥ V or a position ≥ P, the device cannot
    /// check ids without a download: such a row comes out NaN (nothing out of bounds is read).
    fn encoder_forward_at(
        &self,
        out: &mut DeviceBuf<D>,
        ids: &DeviceBuf<D>,
        pos: &DeviceBuf<D>,
        wte: &DeviceBuf<D>,
        wpe: &DeviceBuf<D>,
        s: RowsC,
    ) {
        let RowsC { rows, c } = s;
        let shapes = format!("R={rows}, C={c}");
        let (v, p) = (wte.len.checked_div(c).unwrap_or(0), wpe.len.checked_div(c).unwrap_or(0));
        assert!(
            out.len == rows * c && ids.len == rows && pos.len == rows && wte.len == v * c && wpe.len == p * c,
            "encoder_forward_at ({shapes}): out {}, ids {}, pos {}, wte {}, wpe {} values",
            out.len,
            ids.len,
            pos.len,
            wte.len,
            wpe.len
        );
        let (o, i, ps, te, pe) =
            (self.ptr32_mut(out), self.ptr32(ids), self.ptr32(pos), self.ptr32(wte), self.ptr32(wpe));
        // SAFETY: out holds R·C, ids and pos R, wte V·C, wpe P·C values (checked above); out is
        // a separate allocation; the kernel reads wte/wpe only at rows < V / < P.
        let r = unsafe { encoder_forward_at(&*self.dev, o, [i, ps, te, pe], s, (v, p)) };
        self.ok("encoder_forward_at", &shapes, r);
    }
}

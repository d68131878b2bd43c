//! The GPT-2 layer ops without a reduction across rows: embeddings (training and per-row
//! positions for decoding), GELU, bias gradients, AdamW, the global norm and scaling. Each
//! checks buffer sizes before launching the wrappers of [`crate::backend::kernels::basic`].

use super::{DeviceBuf, KernelBackend};
use crate::backend::device::Device;
use crate::backend::kernels::basic as k;
use crate::backend::AdamWStep;

impl<D: Device> KernelBackend<D> {
    pub(super) fn bias_backward_k(&self, dbias: &mut DeviceBuf<D>, dout: &DeviceBuf<D>, rows: usize, cols: usize) {
        let shapes = format!("rows={rows}, cols={cols}");
        assert!(
            dbias.len == cols && dout.len == rows * cols,
            "bias_backward ({shapes}): dbias holds {} values, dout {}",
            dbias.len,
            dout.len
        );
        let (db, d) = (self.ptr_mut(dbias), self.ptr(dout));
        // SAFETY: dbias holds cols f32 and dout rows·cols (checked above), separate allocations.
        let r = unsafe { k::bias_backward(&*self.dev, db, d, rows, cols) };
        self.ok("bias_backward", &shapes, r);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn encoder_forward_k(
        &self,
        out: &mut DeviceBuf<D>,
        ids: &DeviceBuf<D>,
        wte: &DeviceBuf<D>,
        wpe: &DeviceBuf<D>,
        b: usize,
        t: usize,
        c: usize,
    ) {
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
        let (o, i, te, pe) = (self.ptr_mut(out), self.ptr(ids), self.ptr(wte), self.ptr(wpe));
        // SAFETY: out holds B·T·C, ids B·T, wte V·C, wpe at least T·C values (checked above);
        // out is a separate allocation from the inputs. Ids ≥ V are not read through.
        let r = unsafe { k::encoder_forward(&*self.dev, o, i, te, pe, b * t, t, c, v) };
        self.ok("encoder_forward", &shapes, r);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn encoder_backward_k(
        &self,
        dwte: &mut DeviceBuf<D>,
        dwpe: &mut DeviceBuf<D>,
        dout: &DeviceBuf<D>,
        ids: &DeviceBuf<D>,
        b: usize,
        t: usize,
        c: usize,
    ) {
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
        let (te, pe, d, i) = (self.ptr_mut(dwte), self.ptr_mut(dwpe), self.ptr(dout), self.ptr(ids));
        // SAFETY: sizes checked above; dwte and dwpe are distinct allocations from each other
        // and from the inputs.
        let r = unsafe { k::encoder_backward(&*self.dev, te, pe, d, i, b * t, t, c, v) };
        self.ok("encoder_backward", &shapes, r);
    }

    /// Unlike the CPU oracle, which panics on an id ≥ V or a position ≥ P, the device cannot
    /// check ids without a download: such a row comes out NaN (nothing out of bounds is read).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn encoder_forward_at_k(
        &self,
        out: &mut DeviceBuf<D>,
        ids: &DeviceBuf<D>,
        pos: &DeviceBuf<D>,
        wte: &DeviceBuf<D>,
        wpe: &DeviceBuf<D>,
        rows: usize,
        c: usize,
    ) {
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
        let (o, i, ps, te, pe) = (self.ptr_mut(out), self.ptr(ids), self.ptr(pos), self.ptr(wte), self.ptr(wpe));
        // SAFETY: out holds R·C, ids and pos R, wte V·C, wpe P·C values (checked above); out is
        // a separate allocation; the kernel reads wte/wpe only at rows < V / < P.
        let r = unsafe { k::encoder_forward_at(&*self.dev, o, i, ps, te, pe, (rows, c), (v, p)) };
        self.ok("encoder_forward_at", &shapes, r);
    }

    pub(super) fn gelu_forward_k(&self, out: &mut DeviceBuf<D>, inp: &DeviceBuf<D>) {
        let shapes = format!("N={}", inp.len);
        assert_eq!(out.len, inp.len, "gelu_forward ({shapes}): out holds {} values", out.len);
        let (o, x) = (self.ptr_mut(out), self.ptr(inp));
        // SAFETY: both hold N f32 (checked above), in separate allocations.
        let r = unsafe { k::gelu_forward(&*self.dev, o, x, inp.len) };
        self.ok("gelu_forward", &shapes, r);
    }

    pub(super) fn gelu_backward_k(&self, d: &mut DeviceBuf<D>, inp: &DeviceBuf<D>) {
        let shapes = format!("N={}", inp.len);
        assert_eq!(d.len, inp.len, "gelu_backward ({shapes}): d holds {} values", d.len);
        let (dd, x) = (self.ptr_mut(d), self.ptr(inp));
        // SAFETY: both hold N f32 (checked above), in separate allocations.
        let r = unsafe { k::gelu_backward(&*self.dev, dd, x, inp.len) };
        self.ok("gelu_backward", &shapes, r);
    }

    pub(super) fn adamw_k(
        &self,
        param: &mut DeviceBuf<D>,
        grad: &DeviceBuf<D>,
        m: &mut DeviceBuf<D>,
        v: &mut DeviceBuf<D>,
        h: AdamWStep,
    ) {
        let n = param.len;
        let shapes = format!("N={n}, step={}", h.step);
        assert!(
            grad.len == n && m.len == n && v.len == n,
            "adamw ({shapes}): grad {}, m {}, v {} values",
            grad.len,
            m.len,
            v.len
        );
        let ptrs = [self.ptr_mut(param), self.ptr(grad), self.ptr_mut(m), self.ptr_mut(v)];
        // SAFETY: four distinct allocations of N f32 each (checked above).
        let r = unsafe { k::adamw(&*self.dev, ptrs, n, &h) };
        self.ok("adamw", &shapes, r);
    }

    /// Per-block partial sums into a device workspace, one final block, one f32 downloaded.
    pub(super) fn global_norm_k(&self, bufs: &[&DeviceBuf<D>]) -> f32 {
        let slots: usize = bufs.iter().map(|b| k::global_norm_partials(b.len)).sum();
        if slots == 0 {
            return 0.0; // no values at all: the oracle's empty sum
        }
        let shapes = format!("{} buffers, {} values", bufs.len(), bufs.iter().map(|b| b.len).sum::<usize>());
        let mut partial = self.buf("global_norm", slots);
        let mut out = self.buf("global_norm", 1);
        let list: Vec<_> = bufs.iter().map(|b| (self.ptr(b), b.len)).collect();
        let (o, p) = (self.ptr_mut(&mut out), self.ptr_mut(&mut partial));
        // SAFETY: each buffer holds its own length; partial holds exactly the partial slots the
        // launches write, out one f32; both are fresh allocations.
        let r = unsafe { k::global_norm(&*self.dev, o, p, &list) };
        self.ok("global_norm", &shapes, r);
        f32::from_bits(self.download_words(&out)[0])
    }

    pub(super) fn scale_k(&self, buf: &mut DeviceBuf<D>, alpha: f32) {
        let n = buf.len;
        let x = self.ptr_mut(buf);
        // SAFETY: buf holds N f32.
        let r = unsafe { k::scale(&*self.dev, x, n, alpha) };
        self.ok("scale", format_args!("N={n}"), r);
    }
}

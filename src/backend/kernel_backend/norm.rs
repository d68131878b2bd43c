//! Layer norm forward/backward and the fused weighted cross-entropy on a kernel device.

use super::{DeviceBuf, KernelBackend};
use crate::backend::device::Device;
use crate::backend::kernels::norm;

impl<D: Device> KernelBackend<D> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn layernorm_forward_k(
        &self,
        out: &mut DeviceBuf<D>,
        mean: &mut DeviceBuf<D>,
        rstd: &mut DeviceBuf<D>,
        inp: &DeviceBuf<D>,
        w: &DeviceBuf<D>,
        bias: &DeviceBuf<D>,
        n: usize,
        c: usize,
        eps: f32,
    ) {
        let shapes = format!("N={n}, C={c}");
        let sizes = [out.len, mean.len, rstd.len, inp.len, w.len, bias.len];
        assert_eq!(sizes, [n * c, n, n, n * c, c, c], "layernorm_forward ({shapes}): buffer sizes");
        let (o, m, r) = (self.ptr_mut(out), self.ptr_mut(mean), self.ptr_mut(rstd));
        let (x, wp, bp) = (self.ptr(inp), self.ptr(w), self.ptr(bias));
        // SAFETY: every buffer holds the extent the wrapper asks for (checked above); the
        // outputs are distinct allocations (three &mut), not the inputs.
        let res = unsafe { norm::layernorm_forward(&*self.dev, o, m, r, x, wp, bp, n, c, eps) };
        self.ok("layernorm_forward", &shapes, res);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn layernorm_backward_k(
        &self,
        dinp: &mut DeviceBuf<D>,
        dw: &mut DeviceBuf<D>,
        dbias: &mut DeviceBuf<D>,
        dout: &DeviceBuf<D>,
        inp: &DeviceBuf<D>,
        w: &DeviceBuf<D>,
        mean: &DeviceBuf<D>,
        rstd: &DeviceBuf<D>,
        n: usize,
        c: usize,
    ) {
        let shapes = format!("N={n}, C={c}");
        let sizes = [dinp.len, dw.len, dbias.len, dout.len, inp.len, w.len, mean.len, rstd.len];
        assert_eq!(sizes, [n * c, c, c, n * c, n * c, c, n, n], "layernorm_backward ({shapes}): buffer sizes");
        assert!(
            c <= norm::LAYERNORM_BACKWARD_MAX_C,
            "layernorm_backward ({shapes}): C above the kernel's {} channels",
            norm::LAYERNORM_BACKWARD_MAX_C
        );
        if n * c == 0 {
            return;
        }
        let mut workspace = self.buf("layernorm_backward", norm::layernorm_backward_workspace(n, c));
        let (dx, dwp, dbp, ws) =
            (self.ptr_mut(dinp), self.ptr_mut(dw), self.ptr_mut(dbias), self.ptr_mut(&mut workspace));
        let (dy, x, wp, m, r) = (self.ptr(dout), self.ptr(inp), self.ptr(w), self.ptr(mean), self.ptr(rstd));
        // SAFETY: sizes checked above, the workspace holds layernorm_backward_workspace(N, C)
        // f32; the four written buffers are distinct allocations, not the inputs.
        let res = unsafe { norm::layernorm_backward(&*self.dev, dx, dwp, dbp, ws, dy, x, wp, m, r, n, c) };
        self.ok("layernorm_backward", &shapes, res);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn cross_entropy_k(
        &self,
        logits: &mut DeviceBuf<D>,
        losses: &mut DeviceBuf<D>,
        targets: &DeviceBuf<D>,
        weights: &DeviceBuf<D>,
        n: usize,
        v: usize,
        backward: bool,
    ) {
        let shapes = format!("N={n}, V={v}, backward={backward}");
        let sizes = [logits.len, losses.len, targets.len, weights.len];
        assert_eq!(sizes, [n * v, n, n, n], "cross_entropy ({shapes}): buffer sizes");
        let (x, l, t, wp) = (self.ptr_mut(logits), self.ptr_mut(losses), self.ptr(targets), self.ptr(weights));
        // SAFETY: sizes checked above; logits and losses (written) are distinct allocations
        // (two &mut), not the inputs.
        let res = unsafe { norm::cross_entropy(&*self.dev, x, l, t, wp, n, v, backward) };
        self.ok("cross_entropy", &shapes, res);
    }
}

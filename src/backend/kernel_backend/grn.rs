//! GRN on a kernel device: the causal form (policy head, with its KV-cache step) and the
//! sequence-wide form (value / judge head), launched through `kernels/grn.cu`.

use super::{DeviceBuf, KernelBackend};
use crate::backend::device::Device;
use crate::backend::kernels::grn;
use crate::backend::{Backend, GrnShape};

impl<D: Device> KernelBackend<D> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn grn_causal_forward_k(
        &self,
        out: &mut DeviceBuf<D>,
        g: &mut DeviceBuf<D>,
        mean: &mut DeviceBuf<D>,
        x: &DeviceBuf<D>,
        gamma: &DeviceBuf<D>,
        beta: &DeviceBuf<D>,
        s: GrnShape,
    ) {
        let GrnShape { b, t, c, eps } = s;
        let shapes = format!("B={b}, T={t}, C={c}");
        let sizes = [out.len, g.len, mean.len, x.len, gamma.len, beta.len];
        assert_eq!(
            sizes,
            [b * t * c, b * t * c, b * t, b * t * c, c, c],
            "grn_causal_forward ({shapes}): buffer sizes"
        );
        let p = grn::GrnCausalForward {
            out: self.ptr_mut(out),
            g: self.ptr_mut(g),
            mean: self.ptr_mut(mean),
            x: self.ptr(x),
            gamma: self.ptr(gamma),
            beta: self.ptr(beta),
        };
        // SAFETY: every buffer holds the extent its field names (checked above); the three
        // outputs are distinct allocations (three &mut), not the inputs.
        let res = unsafe { grn::grn_causal_forward(&*self.dev, &p, b, t, c, eps) };
        self.ok("grn_causal_forward", &shapes, res);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn grn_causal_backward_k(
        &self,
        dx: &mut DeviceBuf<D>,
        dgamma: &mut DeviceBuf<D>,
        dbeta: &mut DeviceBuf<D>,
        dy: &DeviceBuf<D>,
        x: &DeviceBuf<D>,
        gamma: &DeviceBuf<D>,
        g: &DeviceBuf<D>,
        mean: &DeviceBuf<D>,
        s: GrnShape,
    ) {
        let GrnShape { b, t, c, eps } = s;
        let shapes = format!("B={b}, T={t}, C={c}");
        let (btc, bt) = (b * t * c, b * t);
        let sizes = [dx.len, dgamma.len, dbeta.len, dy.len, x.len, gamma.len, g.len, mean.len];
        assert_eq!(sizes, [btc, c, c, btc, btc, c, btc, bt], "grn_causal_backward ({shapes}): buffer sizes");
        if btc == 0 {
            return;
        }
        let mut work = self.buf("grn_causal_backward", grn::causal_backward_workspace(b, t, c));
        let p = grn::GrnCausalBackward {
            dx: self.ptr_mut(dx),
            dgamma: self.ptr_mut(dgamma),
            dbeta: self.ptr_mut(dbeta),
            work: self.ptr_mut(&mut work),
            dy: self.ptr(dy),
            x: self.ptr(x),
            gamma: self.ptr(gamma),
            g: self.ptr(g),
            mean: self.ptr(mean),
        };
        // SAFETY: sizes checked above, the workspace holds causal_backward_workspace(B, T, C)
        // f32; the four written buffers are distinct allocations, not the inputs.
        let res = unsafe { grn::grn_causal_backward(&*self.dev, &p, b, t, c, eps) };
        self.ok("grn_causal_backward", &shapes, res);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn grn_causal_step_k(
        &self,
        out: &mut DeviceBuf<D>,
        sumsq: &mut DeviceBuf<D>,
        x: &DeviceBuf<D>,
        seq: &DeviceBuf<D>,
        gamma: &DeviceBuf<D>,
        beta: &DeviceBuf<D>,
        rows: usize,
        c: usize,
        eps: f32,
    ) {
        let shapes = format!("R={rows}, C={c}");
        let b = sumsq.len.checked_div(c).unwrap_or(0);
        // seq stays on the device (as for attention_cached): a row whose sequence is out of
        // range gets NaN outputs from the kernel instead of a write outside the sums.
        let sizes = [out.len, x.len, seq.len, gamma.len, beta.len, sumsq.len];
        assert_eq!(sizes, [rows * c, rows * c, rows, c, c, b * c], "grn_causal_step ({shapes}): buffer sizes");
        if rows * c == 0 {
            return;
        }
        let mut work = self.buf("grn_causal_step", rows * c + rows);
        let p = grn::GrnCausalStep {
            out: self.ptr_mut(out),
            sumsq: self.ptr_mut(sumsq),
            work: self.ptr_mut(&mut work),
            x: self.ptr(x),
            seq: self.ptr(seq),
            gamma: self.ptr(gamma),
            beta: self.ptr(beta),
        };
        // SAFETY: sizes checked above, the workspace holds R·C + R f32; out, sumsq and the
        // workspace are distinct allocations, not the inputs.
        let res = unsafe { grn::grn_causal_step(&*self.dev, &p, rows, b, c, eps) };
        self.ok("grn_causal_step", &shapes, res);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn grn_sequence_forward_k(
        &self,
        out: &mut DeviceBuf<D>,
        g: &mut DeviceBuf<D>,
        mean: &mut DeviceBuf<D>,
        n: &mut DeviceBuf<D>,
        x: &DeviceBuf<D>,
        mask: &DeviceBuf<D>,
        gamma: &DeviceBuf<D>,
        beta: &DeviceBuf<D>,
        s: GrnShape,
    ) {
        let GrnShape { b, t, c, eps } = s;
        let shapes = format!("B={b}, T={t}, C={c}");
        let sizes = [out.len, x.len, mask.len, gamma.len, beta.len, g.len, mean.len, n.len];
        assert_eq!(
            sizes,
            [b * t * c, b * t * c, b * t, c, c, b * c, b, b * c],
            "grn_sequence_forward ({shapes}): buffer sizes"
        );
        let p = grn::GrnForward {
            out: self.ptr_mut(out),
            g: self.ptr_mut(g),
            mean: self.ptr_mut(mean),
            n: self.ptr_mut(n),
            x: self.ptr(x),
            mask: self.ptr(mask),
            gamma: self.ptr(gamma),
            beta: self.ptr(beta),
        };
        // SAFETY: every buffer holds the extent its field names for (b, t, c) (checked above);
        // the outputs are distinct allocations from each other and from the inputs.
        let res = unsafe { grn::grn_forward(&*self.dev, &p, b, t, c, eps) };
        self.ok("grn_sequence_forward", &shapes, res);
        if b * t * c == 0 {
            // The kernel launches nothing then; the statistics are defined as zero, as the
            // oracle writes them.
            for buf in [g, mean, n] {
                self.zero(buf);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn grn_sequence_backward_k(
        &self,
        dx: &mut DeviceBuf<D>,
        dgamma: &mut DeviceBuf<D>,
        dbeta: &mut DeviceBuf<D>,
        dy: &DeviceBuf<D>,
        x: &DeviceBuf<D>,
        mask: &DeviceBuf<D>,
        gamma: &DeviceBuf<D>,
        g: &DeviceBuf<D>,
        mean: &DeviceBuf<D>,
        n: &DeviceBuf<D>,
        s: GrnShape,
    ) {
        let GrnShape { b, t, c, eps } = s;
        let shapes = format!("B={b}, T={t}, C={c}");
        let sizes = [dx.len, dgamma.len, dbeta.len, dy.len, x.len, mask.len, gamma.len, g.len, mean.len, n.len];
        assert_eq!(
            sizes,
            [b * t * c, c, c, b * t * c, b * t * c, b * t, c, b * c, b, b * c],
            "grn_sequence_backward ({shapes}): buffer sizes"
        );
        if b * t * c == 0 {
            return;
        }
        let mut partial = self.buf("grn_sequence_backward", 2 * b * c);
        let p = grn::GrnBackward {
            dx: self.ptr_mut(dx),
            dgamma: self.ptr_mut(dgamma),
            dbeta: self.ptr_mut(dbeta),
            partial: self.ptr_mut(&mut partial),
            dy: self.ptr(dy),
            x: self.ptr(x),
            mask: self.ptr(mask),
            gamma: self.ptr(gamma),
            g: self.ptr(g),
            mean: self.ptr(mean),
            n: self.ptr(n),
        };
        // SAFETY: sizes checked above; partial holds 2·B·C; outputs are distinct allocations.
        let res = unsafe { grn::grn_backward(&*self.dev, &p, b, t, c, eps) };
        self.ok("grn_sequence_backward", &shapes, res);
    }
}

//! Causal self-attention forward/backward (flash-style, the (T,T) matrix never stored) and
//! the KV-cache attention of decoding, on a kernel device.

use super::{DeviceBuf, KernelBackend};
use crate::backend::device::Device;
use crate::backend::kernels::attention as att;

impl<D: Device> KernelBackend<D> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attention_forward_k(
        &self,
        out: &mut DeviceBuf<D>,
        lse: &mut DeviceBuf<D>,
        qkv: &DeviceBuf<D>,
        b: usize,
        t: usize,
        nh: usize,
        c: usize,
    ) {
        let shapes = format!("B={b}, T={t}, NH={nh}, C={c}");
        assert!(
            nh > 0 && c % nh == 0 && out.len == b * t * c && lse.len == b * nh * t && qkv.len == 3 * b * t * c,
            "attention_forward ({shapes}): buffer sizes out={}, lse={}, qkv={} do not match",
            out.len,
            lse.len,
            qkv.len
        );
        let (o, l, x) = (self.ptr_mut(out), self.ptr_mut(lse), self.ptr(qkv));
        // SAFETY: qkv holds B·T·3C, out B·T·C, lse B·NH·T f32 (checked above); out and lse are
        // distinct allocations, not qkv.
        let r = unsafe { att::attention_forward(&*self.dev, o, l, x, (b, t, nh, c)) };
        self.ok("attention_forward", &shapes, r);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn attention_backward_k(
        &self,
        dqkv: &mut DeviceBuf<D>,
        dout: &DeviceBuf<D>,
        qkv: &DeviceBuf<D>,
        out: &DeviceBuf<D>,
        lse: &DeviceBuf<D>,
        b: usize,
        t: usize,
        nh: usize,
        c: usize,
    ) {
        let shapes = format!("B={b}, T={t}, NH={nh}, C={c}");
        let sizes = [dqkv.len, dout.len, qkv.len, out.len, lse.len];
        assert!(
            nh > 0 && c % nh == 0 && sizes == [3 * b * t * c, b * t * c, 3 * b * t * c, b * t * c, b * nh * t],
            "attention_backward ({shapes}): buffer sizes [dqkv, dout, qkv, out, lse] = {sizes:?} do not match"
        );
        // D_i = dout_i·out_i per (b, h, i), written by the dq pass and read by the dk/dv pass.
        let mut dsum = self.buf("attention_backward", b * nh * t);
        let (dx, ds) = (self.ptr_mut(dqkv), self.ptr_mut(&mut dsum));
        let (g, x, o, l) = (self.ptr(dout), self.ptr(qkv), self.ptr(out), self.ptr(lse));
        // SAFETY: sizes checked above, dsum holds B·NH·T; dqkv and dsum are distinct
        // allocations from each other and from the inputs.
        let r = unsafe { att::attention_backward(&*self.dev, dx, ds, g, x, o, l, (b, t, nh, c)) };
        self.ok("attention_backward", &shapes, r);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn attention_cached_k(
        &self,
        out: &mut DeviceBuf<D>,
        k_cache: &mut DeviceBuf<D>,
        v_cache: &mut DeviceBuf<D>,
        qkv: &DeviceBuf<D>,
        seq: &DeviceBuf<D>,
        pos: &DeviceBuf<D>,
        rows: usize,
        t_max: usize,
        nh: usize,
        c: usize,
    ) {
        let shapes = format!("R={rows}, T_max={t_max}, NH={nh}, C={c}");
        let b = k_cache.len.checked_div(t_max * c).unwrap_or(0);
        // seq and pos stay on the device (checking them here would cost a copy and a sync per
        // decoding step); the kernels skip a row whose (seq, pos) is out of range instead, so
        // a bad index cannot write outside the caches, and give it NaN outputs.
        assert!(
            nh > 0
                && c % nh == 0
                && out.len == rows * c
                && qkv.len == rows * 3 * c
                && seq.len == rows
                && pos.len == rows
                && k_cache.len == b * t_max * c
                && v_cache.len == k_cache.len,
            "attention_cached ({shapes}): buffer sizes out={}, qkv={}, seq={}, pos={}, k_cache={}, v_cache={} \
             do not match",
            out.len,
            qkv.len,
            seq.len,
            pos.len,
            k_cache.len,
            v_cache.len
        );
        let p = att::CachedAttention {
            out: self.ptr_mut(out),
            k_cache: self.ptr_mut(k_cache),
            v_cache: self.ptr_mut(v_cache),
            qkv: self.ptr(qkv),
            seq: self.ptr(seq),
            pos: self.ptr(pos),
        };
        // SAFETY: sizes checked above (the caches hold B·T_max·C with B derived from them);
        // out and the caches are distinct allocations from each other and from the inputs.
        let r = unsafe { att::attention_cached(&*self.dev, &p, (rows, b, t_max, nh, c)) };
        self.ok("attention_cached", &shapes, r);
    }
}

//! Causal self-attention forward/backward (flash-style, the (T,T) matrix never stored) and
//! the KV-cache attention of decoding, on a kernel device.

use super::{DeviceBuf, KernelBackend};
use crate::backend::device::Device;

impl<D: Device> KernelBackend<D> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attention_forward_k(
        &self,
        _out: &mut DeviceBuf<D>,
        _lse: &mut DeviceBuf<D>,
        _qkv: &DeviceBuf<D>,
        _b: usize,
        _t: usize,
        _nh: usize,
        _c: usize,
    ) {
        self.unsupported("attention_forward")
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn attention_backward_k(
        &self,
        _dqkv: &mut DeviceBuf<D>,
        _dout: &DeviceBuf<D>,
        _qkv: &DeviceBuf<D>,
        _out: &DeviceBuf<D>,
        _lse: &DeviceBuf<D>,
        _b: usize,
        _t: usize,
        _nh: usize,
        _c: usize,
    ) {
        self.unsupported("attention_backward")
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn attention_cached_k(
        &self,
        _out: &mut DeviceBuf<D>,
        _k_cache: &mut DeviceBuf<D>,
        _v_cache: &mut DeviceBuf<D>,
        _qkv: &DeviceBuf<D>,
        _seq: &DeviceBuf<D>,
        _pos: &DeviceBuf<D>,
        _rows: usize,
        _t_max: usize,
        _nh: usize,
        _c: usize,
    ) {
        self.unsupported("attention_cached")
    }
}

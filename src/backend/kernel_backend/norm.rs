//! Layer norm forward/backward and the fused weighted cross-entropy on a kernel device.

use super::{DeviceBuf, KernelBackend};
use crate::backend::device::Device;

impl<D: Device> KernelBackend<D> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn layernorm_forward_k(
        &self,
        _out: &mut DeviceBuf<D>,
        _mean: &mut DeviceBuf<D>,
        _rstd: &mut DeviceBuf<D>,
        _inp: &DeviceBuf<D>,
        _w: &DeviceBuf<D>,
        _bias: &DeviceBuf<D>,
        _n: usize,
        _c: usize,
        _eps: f32,
    ) {
        self.unsupported("layernorm_forward")
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn layernorm_backward_k(
        &self,
        _dinp: &mut DeviceBuf<D>,
        _dw: &mut DeviceBuf<D>,
        _dbias: &mut DeviceBuf<D>,
        _dout: &DeviceBuf<D>,
        _inp: &DeviceBuf<D>,
        _w: &DeviceBuf<D>,
        _mean: &DeviceBuf<D>,
        _rstd: &DeviceBuf<D>,
        _n: usize,
        _c: usize,
    ) {
        self.unsupported("layernorm_backward")
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn cross_entropy_k(
        &self,
        _logits: &mut DeviceBuf<D>,
        _losses: &mut DeviceBuf<D>,
        _targets: &DeviceBuf<D>,
        _weights: &DeviceBuf<D>,
        _n: usize,
        _v: usize,
        _backward: bool,
    ) {
        self.unsupported("cross_entropy")
    }
}

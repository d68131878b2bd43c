//! The GPT-2 layer ops without a reduction across rows: embeddings (training and per-row
//! positions for decoding), GELU, bias gradients, AdamW, the global norm and scaling.

use super::{DeviceBuf, KernelBackend};
use crate::backend::device::Device;
use crate::backend::AdamWStep;

impl<D: Device> KernelBackend<D> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn bias_backward_k(&self, _dbias: &mut DeviceBuf<D>, _dout: &DeviceBuf<D>, _rows: usize, _cols: usize) {
        self.unsupported("bias_backward")
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn encoder_forward_k(
        &self,
        _out: &mut DeviceBuf<D>,
        _ids: &DeviceBuf<D>,
        _wte: &DeviceBuf<D>,
        _wpe: &DeviceBuf<D>,
        _b: usize,
        _t: usize,
        _c: usize,
    ) {
        self.unsupported("encoder_forward")
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn encoder_backward_k(
        &self,
        _dwte: &mut DeviceBuf<D>,
        _dwpe: &mut DeviceBuf<D>,
        _dout: &DeviceBuf<D>,
        _ids: &DeviceBuf<D>,
        _b: usize,
        _t: usize,
        _c: usize,
    ) {
        self.unsupported("encoder_backward")
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn encoder_forward_at_k(
        &self,
        _out: &mut DeviceBuf<D>,
        _ids: &DeviceBuf<D>,
        _pos: &DeviceBuf<D>,
        _wte: &DeviceBuf<D>,
        _wpe: &DeviceBuf<D>,
        _rows: usize,
        _c: usize,
    ) {
        self.unsupported("encoder_forward_at")
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn gelu_forward_k(&self, _out: &mut DeviceBuf<D>, _inp: &DeviceBuf<D>) {
        self.unsupported("gelu_forward")
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn gelu_backward_k(&self, _d: &mut DeviceBuf<D>, _inp: &DeviceBuf<D>) {
        self.unsupported("gelu_backward")
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn adamw_k(
        &self,
        _param: &mut DeviceBuf<D>,
        _grad: &DeviceBuf<D>,
        _m: &mut DeviceBuf<D>,
        _v: &mut DeviceBuf<D>,
        _h: AdamWStep,
    ) {
        self.unsupported("adamw")
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn global_norm_k(&self, _bufs: &[&DeviceBuf<D>]) -> f32 {
        self.unsupported("global_norm")
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn scale_k(&self, _buf: &mut DeviceBuf<D>, _alpha: f32) {
        self.unsupported("scale")
    }
}

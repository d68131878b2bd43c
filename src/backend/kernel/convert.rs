//! f32 ↔ bf16 conversion (`kernels/convert.cu`): [`crate::backend::MemoryOps::copy`] between
//! buffers of different types, and the bf16 operand of a product whose input is f32.

use super::{DeviceBuf, KernelBackend};
use crate::backend::device::Device;
use crate::backend::launch::{run_elementwise, DevPtr, Launcher};
use crate::backend::precision::Dtype;

/// `convert_{from}_{to}`: `out[i] = inp[i]` converted, i < n. One thread per 8 values.
///
/// # Safety
/// `out` holds `n` values of `to`, `inp` `n` of `from`; they do not overlap.
unsafe fn convert<L: Launcher>(
    dev: &L,
    out: DevPtr,
    to: Dtype,
    inp: DevPtr,
    from: Dtype,
    n: usize,
) -> Result<(), L::Error> {
    // SAFETY: thread g converts values 8g .. 8g + 8 (and one tail value), all < n.
    unsafe { run_elementwise(dev, &format!("convert_{from}_{to}"), out, inp, n, 8) }
}

impl<D: Device> KernelBackend<D> {
    /// `dst = src` converted between f32 and bf16 (rounding to nearest even into bf16).
    pub(super) fn convert(&self, dst: &mut DeviceBuf<D>, src: &DeviceBuf<D>) {
        let shapes = format!("{} {} into {}", src.len, src.dtype, dst.dtype);
        assert!(dst.len == src.len && dst.dtype != src.dtype, "convert ({shapes}): the destination holds {}", dst.len);
        let (to, from) = (dst.dtype, src.dtype);
        let (o, x) = (self.ptr_mut(dst), self.ptr(src));
        // SAFETY: dst holds len values of `to`, src len of `from` (checked above); distinct
        // buffers (one is borrowed mutably).
        let r = unsafe { convert(&*self.dev, o, to, x, from, src.len) };
        self.ok("convert", &shapes, r);
    }
}

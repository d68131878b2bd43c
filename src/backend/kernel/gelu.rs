//! GPT-2's tanh GELU (`kernels/gelu.cu`), elementwise with grid-stride loops over 16-byte
//! packs, in f32 or bf16 storage.

use super::{same_dtype, DeviceBuf, KernelBackend};
use crate::backend::device::Device;
use crate::backend::launch::{run_elementwise, DevPtr, Launcher};
use crate::backend::ops::GeluOps;
use crate::backend::precision::Dtype;

/// `gelu_forward_{dtype}` (`forward`) or `gelu_backward_{dtype}` (`d *= gelu'(inp)` in place)
/// over `n` values: both take (output, input, n). One thread per 16-byte pack.
///
/// # Safety
/// `out` and `inp` hold `n` values of `dtype` each and do not overlap.
unsafe fn gelu<L: Launcher>(
    dev: &L,
    kernel: &str,
    dtype: Dtype,
    out: DevPtr,
    inp: DevPtr,
    n: usize,
) -> Result<(), L::Error> {
    // SAFETY: element i reads inp[i] (and d[i] for the backward) and writes out[i], i < n.
    unsafe { run_elementwise(dev, &format!("{kernel}_{dtype}"), out, inp, n, 16 / dtype.size()) }
}

impl<D: Device> KernelBackend<D> {
    fn gelu_op(&self, op: &str, out: &mut DeviceBuf<D>, inp: &DeviceBuf<D>) {
        let shapes = format!("N={}", inp.len);
        assert_eq!(out.len, inp.len, "{op} ({shapes}): the output holds {} values", out.len);
        let dtype = same_dtype(op, &[out, inp]);
        let (o, x) = (self.ptr_mut(out), self.ptr(inp));
        // SAFETY: both hold N values of `dtype` (checked above), in separate allocations.
        let r = unsafe { gelu(&*self.dev, op, dtype, o, x, inp.len) };
        self.ok(op, &shapes, r);
    }
}

impl<D: Device> GeluOps for KernelBackend<D> {
    fn gelu_forward(&self, out: &mut DeviceBuf<D>, inp: &DeviceBuf<D>) {
        self.gelu_op("gelu_forward", out, inp);
    }
    fn gelu_backward(&self, d: &mut DeviceBuf<D>, inp: &DeviceBuf<D>) {
        self.gelu_op("gelu_backward", d, inp);
    }
}

//! GPT-2's tanh GELU (`kernels/gelu.cu`), elementwise with grid-stride loops.

use super::{DeviceBuf, KernelBackend};
use crate::backend::device::Device;
use crate::backend::launch::{count, run, DevPtr, KernelArgs, Launch, Launcher};
use crate::backend::ops::GeluOps;

/// `gelu_forward_f32` (`forward`) or `gelu_backward_f32` (`d *= gelu'(inp)` in place) over
/// `n` values: both take (output, input, n).
///
/// # Safety
/// `out` and `inp` hold `n` f32 each and do not overlap.
unsafe fn gelu<L: Launcher>(dev: &L, kernel: &str, out: DevPtr, inp: DevPtr, n: usize) -> Result<(), L::Error> {
    if n == 0 {
        return Ok(());
    }
    let nn = count(n);
    let mut args = KernelArgs::new();
    args.arg(&out).arg(&inp).arg(&nn);
    // SAFETY: element i reads inp[i] (and d[i] for the backward) and writes out[i], i < n.
    unsafe { run(dev, kernel, Launch::elementwise(n), &mut args) }
}

impl<D: Device> KernelBackend<D> {
    fn gelu_op(&self, op: &str, kernel: &str, out: &mut DeviceBuf<D>, inp: &DeviceBuf<D>) {
        let shapes = format!("N={}", inp.len);
        assert_eq!(out.len, inp.len, "{op} ({shapes}): the output holds {} values", out.len);
        let (o, x) = (self.ptr_mut(out), self.ptr(inp));
        // SAFETY: both hold N f32 (checked above), in separate allocations.
        let r = unsafe { gelu(&*self.dev, kernel, o, x, inp.len) };
        self.ok(op, &shapes, r);
    }
}

impl<D: Device> GeluOps for KernelBackend<D> {
    fn gelu_forward(&self, out: &mut DeviceBuf<D>, inp: &DeviceBuf<D>) {
        self.gelu_op("gelu_forward", "gelu_forward_f32", out, inp);
    }
    fn gelu_backward(&self, d: &mut DeviceBuf<D>, inp: &DeviceBuf<D>) {
        self.gelu_op("gelu_backward", "gelu_backward_f32", d, inp);
    }
}

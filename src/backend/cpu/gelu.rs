//! GPT-2's GELU: the tanh approximation ("gelu_new" in transformers).

use super::fastmath::tanh;
use super::simd::avx2_dispatch;
use super::CpuBackend;
use crate::backend::ops::GeluOps;
use rayon::prelude::*;

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const COEF: f32 = 0.044715;
const CHUNK: usize = 4096;

/// `out = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
fn gelu_forward(out: &mut [f32], inp: &[f32]) {
    out.par_chunks_mut(CHUNK).zip(inp.par_chunks(CHUNK)).for_each(|(o, x)| forward_chunk(o, x));
}

avx2_dispatch! {
    fn forward_chunk(out: &mut [f32], inp: &[f32]) {
        for (o, &x) in out.iter_mut().zip(inp) {
            let u = SQRT_2_OVER_PI * (x + COEF * x * x * x);
            *o = 0.5 * x * (1.0 + tanh(u));
        }
    }
}

/// In place: `d *= gelu'(x)`.
fn gelu_backward(d: &mut [f32], inp: &[f32]) {
    d.par_chunks_mut(CHUNK).zip(inp.par_chunks(CHUNK)).for_each(|(d, x)| backward_chunk(d, x));
}

avx2_dispatch! {
    fn backward_chunk(d: &mut [f32], inp: &[f32]) {
        for (d, &x) in d.iter_mut().zip(inp) {
            let u = SQRT_2_OVER_PI * (x + COEF * x * x * x);
            let th = tanh(u);
            let sech2 = 1.0 - th * th;
            let du = SQRT_2_OVER_PI * (1.0 + 3.0 * COEF * x * x);
            *d *= 0.5 * (1.0 + th) + 0.5 * x * sech2 * du;
        }
    }
}

impl GeluOps for CpuBackend {
    fn gelu_forward(&self, out: &mut Vec<f32>, inp: &Vec<f32>) {
        assert_eq!(
            out.len(),
            inp.len(),
            "gelu_forward: the output holds {} values, the input {}",
            out.len(),
            inp.len()
        );
        self.run(|| gelu_forward(out, inp));
    }
    fn gelu_backward(&self, d: &mut Vec<f32>, inp: &Vec<f32>) {
        assert_eq!(d.len(), inp.len(), "gelu_backward: d holds {} values, the input {}", d.len(), inp.len());
        self.run(|| gelu_backward(d, inp));
    }
}

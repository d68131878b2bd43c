//! The optimizer's elementwise ops: AdamW, the global norm, scaling.

use super::CpuBackend;
use crate::backend::ops::OptimOps;
use crate::backend::shapes::AdamWStep;
use rayon::prelude::*;

/// Fixed chunk size for reductions, so the summation order (and the result) does not depend
/// on the thread count.
const CHUNK: usize = 1 << 14;

/// One AdamW step in place (PyTorch's `torch.optim.AdamW` formula).
fn adamw(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], h: AdamWStep) {
    let bc1 = 1.0 - h.beta1.powi(h.step as i32);
    let bc2 = 1.0 - h.beta2.powi(h.step as i32);
    p.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
        .for_each(|((p, g), (m, v))| {
            for i in 0..p.len() {
                let gi = g[i] * h.grad_scale;
                m[i] = h.beta1 * m[i] + (1.0 - h.beta1) * gi;
                v[i] = h.beta2 * v[i] + (1.0 - h.beta2) * gi * gi;
                let mhat = m[i] / bc1;
                let vhat = v[i] / bc2;
                // Decoupled decay acts on the weight before the gradient step, as PyTorch does.
                p[i] -= h.lr * h.weight_decay * p[i];
                p[i] -= h.lr * mhat / (vhat.sqrt() + h.eps);
            }
        });
}

/// `Σ x²` accumulated in f64 over fixed chunks.
fn sum_squares(x: &[f32]) -> f64 {
    let partial: Vec<f64> = x.par_chunks(CHUNK).map(|c| c.iter().map(|&v| v as f64 * v as f64).sum()).collect();
    partial.iter().sum()
}

/// `x *= alpha`.
fn scale(x: &mut [f32], alpha: f32) {
    x.par_chunks_mut(CHUNK).for_each(|c| c.iter_mut().for_each(|v| *v *= alpha));
}

impl OptimOps for CpuBackend {
    fn adamw(&self, param: &mut Vec<f32>, grad: &Vec<f32>, m: &mut Vec<f32>, v: &mut Vec<f32>, h: AdamWStep) {
        let n = param.len();
        assert!(
            grad.len() == n && m.len() == n && v.len() == n,
            "adamw: grad {}, m {}, v {} values for a parameter of {n}",
            grad.len(),
            m.len(),
            v.len()
        );
        self.run(|| adamw(param, grad, m, v, h));
    }
    fn global_norm(&self, bufs: &[&Vec<f32>]) -> f32 {
        self.run(|| bufs.iter().map(|b| sum_squares(b)).sum::<f64>().sqrt() as f32)
    }
    fn scale(&self, buf: &mut Vec<f32>, alpha: f32) {
        self.run(|| scale(buf, alpha));
    }
}

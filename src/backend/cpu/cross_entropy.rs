//! Weighted softmax cross-entropy over the vocabulary, with the gradient written over the
//! logits in the same pass (the llm.c "fused classifier"): the (N,V) probabilities are never
//! stored on their own.

use super::fastmath::exp;
use super::simd::avx2_dispatch;
use super::{rows_per_task, CpuBackend};
use crate::backend::ops::CrossEntropyOps;
use crate::backend::shapes::CrossEntropyShape;
use rayon::prelude::*;

/// `losses[i] = w[i]·(logsumexp(logits[i]) − logits[i][targets[i]])`; with `backward`,
/// `logits[i] ← w[i]·(softmax(logits[i]) − onehot(targets[i]))`.
fn cross_entropy(logits: &mut [f32], losses: &mut [f32], targets: &[u32], weights: &[f32], v: usize, backward: bool) {
    let rows = logits.par_chunks_mut(v).zip(losses.par_iter_mut()).enumerate();
    rows.with_min_len(rows_per_task(v)).for_each(|(i, (row, loss))| {
        *loss = row_loss(row, targets[i] as usize, weights[i], backward);
    });
}

avx2_dispatch! {
    /// One row of [`cross_entropy`]: returns its weighted loss, and with `backward` writes its
    /// gradient over it.
    fn row_loss(row: &mut [f32], tgt: usize, w: f32, backward: bool) -> f32 {
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        // Sixteen partial sums keep the loop vectorisable (and its order fixed).
        let mut acc = [0.0f32; 16];
        let mut chunks = row.chunks_exact(16);
        for c in &mut chunks {
            for i in 0..16 {
                acc[i] += exp(c[i] - max);
            }
        }
        let sum: f32 = acc.iter().sum::<f32>() + chunks.remainder().iter().map(|&x| exp(x - max)).sum::<f32>();
        let lse = max + sum.ln();
        let loss = w * (lse - row[tgt]);
        if backward {
            let inv = 1.0 / sum;
            for x in row.iter_mut() {
                *x = w * exp(*x - max) * inv;
            }
            row[tgt] -= w;
        }
        loss
    }
}

impl CrossEntropyOps for CpuBackend {
    fn cross_entropy(
        &self,
        logits: &mut Vec<f32>,
        losses: &mut Vec<f32>,
        targets: &Vec<u32>,
        weights: &Vec<f32>,
        s: CrossEntropyShape,
        backward: bool,
    ) {
        let CrossEntropyShape { n, v } = s;
        assert!(
            logits.len() == n * v && losses.len() == n && targets.len() == n && weights.len() == n,
            "cross_entropy: buffer sizes do not match N={n} V={v}"
        );
        self.run(|| cross_entropy(logits, losses, targets, weights, v, backward));
    }
}

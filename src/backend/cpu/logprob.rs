//! Fused log-softmax gather + entropy over vocabulary rows, forward and backward, with a
//! sampling temperature. The normalised distribution is recomputed row by row and never
//! stored: the backward pass writes d/dlogits over the logits themselves.
//!
//! Per row, with z = τ⁻¹·x, m = max z, s = Σ e^{z−m}, u = Σ e^{z−m}(z−m):
//! - log p_j = z_j − m − ln s, so logp = z_t − m − ln s;
//! - H = −Σ p_j log p_j = ln s − u/s;
//! - ∂logp/∂z_j = δ_jt − p_j and ∂H/∂z_j = −p_j (log p_j + H),
//!   so dx_j = τ⁻¹·(dlogp·(δ_jt − p_j) − dH·p_j·(log p_j + H)).

use super::fastmath::exp;
use super::simd::avx2_dispatch;
use super::{rows_per_task, CpuBackend};
use crate::backend::ops::{check_logprob_chunk, LogprobOps};
use crate::backend::shapes::LogprobChunk;
use rayon::prelude::*;

/// Lanes of the partial sums: a fixed order (reproducible) that still vectorises.
const LANES: usize = 16;

avx2_dispatch! {
    /// (m, ln s, H) of one row of z = inv_t·x.
    fn row_stats(row: &[f32], inv_t: f32) -> (f32, f32, f32) {
        let m = row.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x * inv_t));
        let mut s = [0.0f32; LANES];
        let mut u = [0.0f32; LANES];
        let mut it = row.chunks_exact(LANES);
        for c in &mut it {
            for i in 0..LANES {
                let d = c[i] * inv_t - m;
                let e = exp(d);
                s[i] += e;
                u[i] += e * d;
            }
        }
        let (mut st, mut ut) = (0.0f32, 0.0f32);
        for &x in it.remainder() {
            let d = x * inv_t - m;
            let e = exp(d);
            st += e;
            ut += e * d;
        }
        let s: f32 = s.iter().sum::<f32>() + st;
        let u: f32 = u.iter().sum::<f32>() + ut;
        let ln_s = s.ln();
        (m, ln_s, ln_s - u / s)
    }
}

/// Forward: `logp[row0+r]` and `entropy[row0+r]` for each row r of the chunk.
fn forward(logits: &[f32], targets: &[u32], logp: &mut [f32], entropy: &mut [f32], ch: LogprobChunk) {
    let LogprobChunk { row0, rows, v, inv_temperature: inv_t } = ch;
    let logits = &logits[..rows * v];
    let logp = &mut logp[row0..row0 + rows];
    let entropy = &mut entropy[row0..row0 + rows];
    let targets = &targets[row0..row0 + rows];
    let rows = logits.par_chunks(v).zip(logp.par_iter_mut().zip(entropy.par_iter_mut())).zip(targets.par_iter());
    rows.with_min_len(rows_per_task(v)).for_each(|((row, (lp, h)), &t)| {
        let (m, ln_s, ent) = row_stats(row, inv_t);
        *h = ent;
        *lp = match row.get(t as usize) {
            Some(&x) => x * inv_t - m - ln_s,
            None => f32::NAN,
        };
    });
}

/// Backward: overwrites the chunk's logits rows with d/dlogits given `dlogp` and `dentropy`.
fn backward(logits: &mut [f32], targets: &[u32], dlogp: &[f32], dentropy: &[f32], ch: LogprobChunk) {
    let LogprobChunk { row0, rows, v, inv_temperature: inv_t } = ch;
    let logits = &mut logits[..rows * v];
    let (dlogp, dentropy, targets) =
        (&dlogp[row0..row0 + rows], &dentropy[row0..row0 + rows], &targets[row0..row0 + rows]);
    logits.par_chunks_mut(v).enumerate().with_min_len(rows_per_task(v)).for_each(|(r, row)| {
        let (gl, gh, t) = (dlogp[r], dentropy[r], targets[r] as usize);
        if t >= v {
            row.fill(f32::NAN);
            return;
        }
        if gl == 0.0 && gh == 0.0 {
            row.fill(0.0);
            return;
        }
        row_backward(row, t, (gl, gh), inv_t);
    });
}

avx2_dispatch! {
    /// One row of [`backward`] with target `t` < V and upstream gradients (dlogp, dH).
    fn row_backward(row: &mut [f32], t: usize, grads: (f32, f32), inv_t: f32) {
        let (gl, gh) = grads;
        let (m, ln_s, ent) = row_stats(row, inv_t);
        // dx_j = τ⁻¹·p_j·(−dlogp − dH·(log p_j + H)), then + τ⁻¹·dlogp at the target.
        let a = -gl - gh * ent;
        for x in row.iter_mut() {
            let logp_j = *x * inv_t - m - ln_s;
            *x = inv_t * exp(logp_j) * (a - gh * logp_j);
        }
        row[t] += inv_t * gl;
    }
}

impl LogprobOps for CpuBackend {
    fn logprob_entropy_forward(
        &self,
        logits: &Vec<f32>,
        targets: &Vec<u32>,
        logp: &mut Vec<f32>,
        entropy: &mut Vec<f32>,
        chunk: LogprobChunk,
    ) {
        check_logprob_chunk("logprob_entropy_forward", chunk, logits.len(), targets.len(), [logp.len(), entropy.len()]);
        self.run(|| forward(logits, targets, logp, entropy, chunk));
    }
    fn logprob_entropy_backward(
        &self,
        logits: &mut Vec<f32>,
        targets: &Vec<u32>,
        dlogp: &Vec<f32>,
        dentropy: &Vec<f32>,
        chunk: LogprobChunk,
    ) {
        check_logprob_chunk(
            "logprob_entropy_backward",
            chunk,
            logits.len(),
            targets.len(),
            [dlogp.len(), dentropy.len()],
        );
        self.run(|| backward(logits, targets, dlogp, dentropy, chunk));
    }
}

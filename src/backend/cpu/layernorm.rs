//! Layer normalisation over the channel axis.

use super::{rows_per_task, CpuBackend};
use crate::backend::ops::LayerNormOps;
use crate::backend::shapes::{Affine, LayerNormShape, LnStats};
use rayon::prelude::*;

/// Channels per worker when summing parameter gradients over rows.
const STRIPE: usize = 64;

/// `out (N,C) = (x − mean)·rstd·w + b`, storing `mean` and `rstd` (N).
fn layernorm_forward(
    out: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
    inp: &[f32],
    w: &[f32],
    b: &[f32],
    c: usize,
    eps: f32,
) {
    let rows = out.par_chunks_mut(c).zip(inp.par_chunks(c)).zip(mean.par_iter_mut().zip(rstd.par_iter_mut()));
    rows.with_min_len(rows_per_task(c)).for_each(|((o, x), (mu, rs))| {
        let m = x.iter().sum::<f32>() / c as f32;
        let var = x.iter().map(|v| (v - m) * (v - m)).sum::<f32>() / c as f32;
        let r = 1.0 / (var + eps).sqrt();
        for j in 0..c {
            o[j] = (x[j] - m) * r * w[j] + b[j];
        }
        *mu = m;
        *rs = r;
    });
}

/// Accumulates `dinp (N,C)`, `dw (C)`, `db (C)` given `dout (N,C)`.
///
/// With x̂ = (x − mean)·rstd and g = dout·w: dx = rstd·(g − mean(g) − x̂·mean(g·x̂)).
fn layernorm_backward(
    dinp: &mut [f32],
    dw: &mut [f32],
    db: &mut [f32],
    dout: &[f32],
    inp: &[f32],
    w: &[f32],
    stats: LnStats<&[f32]>,
    c: usize,
) {
    let LnStats { mean, rstd } = stats;
    let n = mean.len();
    // Input gradient: rows are independent.
    dinp.par_chunks_mut(c).enumerate().with_min_len(rows_per_task(c)).for_each(|(i, dx)| {
        let x = &inp[i * c..(i + 1) * c];
        let dy = &dout[i * c..(i + 1) * c];
        let (m, r) = (mean[i], rstd[i]);
        let mut g_mean = 0.0f32;
        let mut gx_mean = 0.0f32;
        for j in 0..c {
            let g = dy[j] * w[j];
            g_mean += g;
            gx_mean += g * (x[j] - m) * r;
        }
        g_mean /= c as f32;
        gx_mean /= c as f32;
        for j in 0..c {
            let xhat = (x[j] - m) * r;
            dx[j] += r * (dy[j] * w[j] - g_mean - xhat * gx_mean);
        }
    });
    // Parameter gradients: each worker owns a stripe of channels and sums it over the rows
    // in order, so the result does not depend on the thread count and nothing is allocated.
    dw.par_chunks_mut(STRIPE).zip(db.par_chunks_mut(STRIPE)).enumerate().for_each(|(s, (dw, db))| {
        let lo = s * STRIPE;
        for i in 0..n {
            let x = &inp[i * c + lo..i * c + lo + dw.len()];
            let dy = &dout[i * c + lo..i * c + lo + dw.len()];
            let (m, r) = (mean[i], rstd[i]);
            for j in 0..dw.len() {
                dw[j] += dy[j] * (x[j] - m) * r;
                db[j] += dy[j];
            }
        }
    });
}

impl LayerNormOps for CpuBackend {
    fn layernorm_forward(
        &self,
        out: &mut Vec<f32>,
        stats: LnStats<&mut Vec<f32>>,
        inp: &Vec<f32>,
        p: Affine<&Vec<f32>>,
        s: LayerNormShape,
    ) {
        let LayerNormShape { n, c, eps } = s;
        let LnStats { mean, rstd } = stats;
        assert!(
            [out.len(), inp.len(), mean.len(), rstd.len(), p.w.len(), p.b.len()] == [n * c, n * c, n, n, c, c],
            "layernorm_forward: buffer sizes do not match N={n} C={c}"
        );
        self.run(|| layernorm_forward(out, mean, rstd, inp, p.w, p.b, c, eps));
    }
    fn layernorm_backward(
        &self,
        dinp: &mut Vec<f32>,
        dp: Affine<&mut Vec<f32>>,
        dout: &Vec<f32>,
        inp: &Vec<f32>,
        w: &Vec<f32>,
        stats: LnStats<&Vec<f32>>,
        s: LayerNormShape,
    ) {
        let LayerNormShape { n, c, .. } = s;
        assert!(
            [dinp.len(), dout.len(), inp.len(), stats.mean.len(), stats.rstd.len(), dp.w.len(), dp.b.len(), w.len()]
                == [n * c, n * c, n * c, n, n, c, c, c],
            "layernorm_backward: buffer sizes do not match N={n} C={c}"
        );
        let stats = stats.map(Vec::as_slice);
        self.run(|| layernorm_backward(dinp, dp.w, dp.b, dout, inp, w, stats, c));
    }
}

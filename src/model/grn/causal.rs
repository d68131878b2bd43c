//! Causal GRN: the statistic of position t is taken over the prefix s ≤ t of its sequence,
//! so the form can sit in front of the policy head (position t never sees a later token) and
//! incremental decoding reproduces the full pass. The CPU oracle of the backend's
//! `grn_causal_*` ops.
//!
//! For a hidden state x (B,T,C), per sequence b and position t:
//!
//! ```text
//! S[t,c] = Σ_{s≤t} x[s,c]²                      running sum of squares
//! G[t,c] = sqrt(S[t,c])                          L2 norm of channel c over the prefix
//! D[t]   = (1/C) Σ_c G[t,c] + eps                mean norm over channels
//! N[t,c] = G[t,c] / D[t]                         relative norm, in [0, C]
//! y[t,c] = γ_c·(x·N[t,c]) + β_c + x
//! ```
//!
//! There is no padding mask: a batch is right-padded (every sequence starts at position 0,
//! as the KV cache does), and by causality a padded tail cannot change any earlier position;
//! its own outputs are whatever the arithmetic gives and are masked out by every loss.
//!
//! Zero γ and β leave x bit for bit, as in the sequence-wide form: a real output is computed
//! as `a·x − (0 − β)` with `a = 1 + γ·N`.

use rayon::prelude::*;

fn check(what: &str, x: usize, gamma: usize, beta: usize, b: usize, t: usize, c: usize) {
    assert_eq!(x, b * t * c, "{what}: hidden state has {x} values, expected B·T·C = {b}·{t}·{c}");
    assert!(gamma == c && beta == c, "{what}: gamma/beta have {gamma}/{beta} values, expected C = {c}");
}

/// `N = G / D`, or 0 where D is 0 (every norm 0 and eps = 0), never 0/0.
#[inline]
fn rel_norm(g: f64, d: f64) -> f64 {
    if d > 0.0 {
        g / d
    } else {
        0.0
    }
}

/// One output row: `a·x − (0 − β)` with `a = 1 + γ·N`, from the row's norms `g` and mean `mu`.
#[inline]
fn apply_row(out: &mut [f32], x: &[f32], g: &[f32], mu: f64, gamma: &[f32], beta: &[f32], eps: f32) {
    let d = mu + eps as f64;
    for j in 0..x.len() {
        let n = rel_norm(g[j] as f64, d) as f32;
        let a = 1.0 + gamma[j] * n;
        out[j] = a * x[j] - (0.0 - beta[j]);
    }
}

/// The mean of a row of norms, in f64.
#[inline]
fn row_mean(g: &[f32]) -> f64 {
    g.iter().map(|&v| v as f64).sum::<f64>() / g.len() as f64
}

/// Causal GRN forward: `out (B,T,C)` from `x (B,T,C)`, storing the prefix norms `g (B,T,C)`
/// and their channel means `mean (B,T)` for the backward pass. Running sums are f64; the
/// sequences run in parallel and the result does not depend on the thread count.
///
/// # Panics
/// If a buffer's length does not match B, T, C.
#[allow(clippy::too_many_arguments)]
pub fn grn_causal_forward(
    out: &mut [f32],
    g: &mut [f32],
    mean: &mut [f32],
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    b: usize,
    t: usize,
    c: usize,
    eps: f32,
) {
    check("grn_causal_forward", x.len(), gamma.len(), beta.len(), b, t, c);
    assert!(out.len() == x.len() && g.len() == x.len(), "grn_causal_forward: out and g must be (B,T,C)");
    assert_eq!(mean.len(), b * t, "grn_causal_forward: mean must be (B,T)");
    if b * t * c == 0 {
        return;
    }
    let tc = t * c;
    out.par_chunks_mut(tc).zip(g.par_chunks_mut(tc)).zip(mean.par_chunks_mut(t)).zip(x.par_chunks(tc)).for_each(
        |(((ob, gb), mb), xb)| {
            let mut sumsq = vec![0.0f64; c];
            for (ti, mu_out) in mb.iter_mut().enumerate() {
                let row = ti * c..(ti + 1) * c;
                for ((s, gv), &v) in sumsq.iter_mut().zip(&mut gb[row.clone()]).zip(&xb[row.clone()]) {
                    *s += v as f64 * v as f64;
                    *gv = s.sqrt() as f32;
                }
                let mu = row_mean(&gb[row.clone()]);
                *mu_out = mu as f32;
                apply_row(&mut ob[row.clone()], &xb[row.clone()], &gb[row], mu, gamma, beta, eps);
            }
        },
    );
}

/// Causal GRN backward: overwrites `dx (B,T,C)` and accumulates `dgamma`, `dbeta (C)` given
/// `dy (B,T,C)`, the forward's `x` and its stored `g`, `mean`.
///
/// Per sequence, with D_t = mean_t + eps, u[t,c] = γ_c·dy[t,c]·x[t,c] (= ∂L/∂N[t,c]):
///
/// ```text
/// dβ_c   += Σ_t dy[t,c]
/// dγ_c   += Σ_t dy[t,c]·x[t,c]·N[t,c]
/// h[t,c]  = u[t,c]/D_t − (Σ_k u[t,k]·G[t,k]) / (C·D_t²)      = ∂L/∂G[t,c]
/// R[s,c]  = Σ_{t≥s} h[t,c] / G[t,c]                           suffix sum (∂G[t,c]/∂x[s,c] = x[s,c]/G[t,c])
/// dx[s,c] = (1 + γ_c·N[s,c])·dy[s,c] + x[s,c]·R[s,c]
/// ```
///
/// Where G[t,c] = 0 the prefix of channel c is all zeros and its terms vanish; they are taken
/// as 0 (PyTorch's choice for the norm of a zero vector). Where R is 0 (γ = 0) dx is exactly
/// a·dy, so zero-init GRN passes gradients through bit for bit. Reductions are f64; the
/// parameter gradients are summed over sequences in order.
///
/// # Panics
/// If a buffer's length does not match B, T, C.
#[allow(clippy::too_many_arguments)]
pub fn grn_causal_backward(
    dx: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
    dy: &[f32],
    x: &[f32],
    gamma: &[f32],
    g: &[f32],
    mean: &[f32],
    b: usize,
    t: usize,
    c: usize,
    eps: f32,
) {
    check("grn_causal_backward", x.len(), gamma.len(), c, b, t, c);
    assert!(
        dx.len() == x.len() && dy.len() == x.len() && g.len() == x.len(),
        "grn_causal_backward: dx, dy, g must be (B,T,C)"
    );
    assert!(dgamma.len() == c && dbeta.len() == c, "grn_causal_backward: dgamma and dbeta must be (C)");
    assert_eq!(mean.len(), b * t, "grn_causal_backward: mean must be (B,T)");
    if b * t * c == 0 {
        return;
    }
    let tc = t * c;
    // Per sequence: Σ_t dy·x·N (C) then Σ_t dy (C), summed over sequences afterwards.
    let mut partial = vec![0.0f64; b * 2 * c];
    dx.par_chunks_mut(tc).zip(partial.par_chunks_mut(2 * c)).enumerate().for_each(|(bi, (dxb, pb))| {
        let (xb, dyb, gb) = (&x[bi * tc..(bi + 1) * tc], &dy[bi * tc..(bi + 1) * tc], &g[bi * tc..(bi + 1) * tc]);
        let mb = &mean[bi * t..(bi + 1) * t];
        let (pg, pbeta) = pb.split_at_mut(c);
        let mut suffix = vec![0.0f64; c];
        for ti in (0..t).rev() {
            let row = ti * c..(ti + 1) * c;
            let (xr, dr, gr) = (&xb[row.clone()], &dyb[row.clone()], &gb[row.clone()]);
            let d = mb[ti] as f64 + eps as f64;
            // Σ_k u_k·G_k: the part of every ∂L/∂G that flows through the mean.
            let k: f64 = (0..c).map(|j| gamma[j] as f64 * dr[j] as f64 * xr[j] as f64 * gr[j] as f64).sum();
            let kc = if d > 0.0 { k / (c as f64 * d * d) } else { 0.0 };
            let dxr = &mut dxb[row];
            for j in 0..c {
                let (xv, dv, gv) = (xr[j] as f64, dr[j] as f64, gr[j] as f64);
                if gv > 0.0 && d > 0.0 {
                    suffix[j] += (gamma[j] as f64 * dv * xv / d - kc) / gv;
                }
                let n = rel_norm(gv, d);
                pg[j] += dv * xv * n;
                pbeta[j] += dv;
                let a = 1.0 + gamma[j] * n as f32;
                let direct = a * dr[j];
                dxr[j] = if suffix[j] != 0.0 { (direct as f64 + xv * suffix[j]) as f32 } else { direct };
            }
        }
    });
    for j in 0..c {
        let (mut sg, mut sb) = (0.0f64, 0.0f64);
        for pb in partial.chunks(2 * c) {
            sg += pb[j];
            sb += pb[c + j];
        }
        dgamma[j] += sg as f32;
        dbeta[j] += sb as f32;
    }
}

/// Causal GRN over R rows of a KV-cached pass: row r is the next position of cache sequence
/// `seq[r]`, whose running sums of squares are `sumsq[seq[r]] (C)`; rows are taken in order,
/// so a prefill may hold many consecutive positions of one sequence. Adds each row's squares
/// to its sequence's sums (f32, which is what the cache keeps) and writes `out (R,C)`.
/// After a prefill and any number of steps, `out` equals the rows of [`grn_causal_forward`]
/// on the whole sequence up to the rounding of the running sums.
///
/// # Panics
/// If a buffer's length does not match R, C, or a sequence index is outside `sumsq`.
#[allow(clippy::too_many_arguments)]
pub fn grn_causal_step(
    out: &mut [f32],
    sumsq: &mut [f32],
    x: &[f32],
    seq: &[u32],
    gamma: &[f32],
    beta: &[f32],
    rows: usize,
    c: usize,
    eps: f32,
) {
    check("grn_causal_step", x.len(), gamma.len(), beta.len(), rows, 1, c);
    assert_eq!(out.len(), x.len(), "grn_causal_step: out must be (R,C)");
    assert_eq!(seq.len(), rows, "grn_causal_step: seq must be (R)");
    assert!(c > 0 && sumsq.len() % c == 0, "grn_causal_step: sumsq must be (B,C)");
    let mut g = vec![0.0f32; c];
    for r in 0..rows {
        let s = seq[r] as usize;
        assert!(s < sumsq.len() / c, "grn_causal_step: sequence {s} is outside the cache's sums");
        let (xr, acc) = (&x[r * c..(r + 1) * c], &mut sumsq[s * c..(s + 1) * c]);
        for j in 0..c {
            acc[j] += xr[j] * xr[j];
            g[j] = acc[j].sqrt();
        }
        apply_row(&mut out[r * c..(r + 1) * c], xr, &g, row_mean(&g), gamma, beta, eps);
    }
}

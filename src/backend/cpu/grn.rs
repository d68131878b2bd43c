//! Global response normalisation (GRN), the CPU oracle of [`GrnOps`]: the causal form in
//! front of the policy head and the sequence-wide form for heads that read a whole sequence
//! (value / judge). The model's settings and parameters are in `crate::model::grn`.
//!
//! **Causal form.** The statistic of position t is taken over the prefix s ≤ t of its sequence,
//! so the form can sit in front of the policy head (position t never sees a later token) and
//! incremental decoding reproduces the full pass.
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

//!
//! **Sequence-wide form.** One statistic per sequence over its real (mask ≠ 0) positions:
//! G_c = ‖x[·,c]‖₂, N_c = G_c / (mean_c G + eps), y = γ·(x·N) + β + x at real positions and
//! y = x at padding.

use super::CpuBackend;
use crate::backend::ops::GrnOps;
use crate::backend::shapes::{GrnCausalStats, GrnParams, GrnSeqStats, GrnShape, GrnStepShape, Masked};
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
pub fn grn_causal_forward(
    out: &mut [f32],
    stats: GrnCausalStats<&mut [f32]>,
    x: &[f32],
    p: GrnParams<&[f32]>,
    s: GrnShape,
) {
    let (GrnCausalStats { g, mean }, GrnParams { gamma, beta }, GrnShape { b, t, c, eps }) = (stats, p, s);
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
/// Per sequence, with D_t = mean_t + eps, `u[t,c] = γ_c·dy[t,c]·x[t,c]` (= `∂L/∂N[t,c]`):
///
/// ```text
/// dβ_c   += Σ_t dy[t,c]
/// dγ_c   += Σ_t dy[t,c]·x[t,c]·N[t,c]
/// h[t,c]  = u[t,c]/D_t − (Σ_k u[t,k]·G[t,k]) / (C·D_t²)      = ∂L/∂G[t,c]
/// R[s,c]  = Σ_{t≥s} h[t,c] / G[t,c]                           suffix sum (∂G[t,c]/∂x[s,c] = x[s,c]/G[t,c])
/// dx[s,c] = (1 + γ_c·N[s,c])·dy[s,c] + x[s,c]·R[s,c]
/// ```
///
/// Where `G[t,c]` = 0 the prefix of channel c is all zeros and its terms vanish; they are taken
/// as 0 (PyTorch's choice for the norm of a zero vector). Where R is 0 (γ = 0) dx is exactly
/// a·dy, so zero-init GRN passes gradients through bit for bit. Reductions are f64; the
/// parameter gradients are summed over sequences in order.
///
/// # Panics
/// If a buffer's length does not match B, T, C.
pub fn grn_causal_backward(
    dx: &mut [f32],
    dp: GrnParams<&mut [f32]>,
    dy: &[f32],
    x: &[f32],
    gamma: &[f32],
    stats: GrnCausalStats<&[f32]>,
    s: GrnShape,
) {
    let (GrnParams { gamma: dgamma, beta: dbeta }, GrnCausalStats { g, mean }) = (dp, stats);
    let GrnShape { b, t, c, eps } = s;
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
    add_param_partials(dgamma, dbeta, &partial, c);
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
pub fn grn_causal_step(
    out: &mut [f32],
    sumsq: &mut [f32],
    x: &[f32],
    seq: &[u32],
    p: GrnParams<&[f32]>,
    s: GrnStepShape,
) {
    let (GrnParams { gamma, beta }, GrnStepShape { rows, c, eps }) = (p, s);
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

// ---- sequence-wide form ----------------------------------------------------------------

/// Whether position `t` of a mask row is a real token. Any non-zero value counts, so both
/// 0/1 masks and per-token loss weights can be passed.
#[inline]
fn is_real(m: f32) -> bool {
    m != 0.0
}

fn check_shapes(what: &str, x: usize, mask: usize, gamma: usize, b: usize, t: usize, c: usize) {
    assert_eq!(x, b * t * c, "{what}: hidden state has {x} values, expected B·T·C = {b}·{t}·{c}");
    assert_eq!(mask, b * t, "{what}: mask has {mask} values, expected B·T = {b}·{t}");
    assert_eq!(gamma, c, "{what}: gamma/beta have {gamma} values, expected C = {c}");
}

/// Sequence-wide GRN forward: `out (B,T,C)` from `x (B,T,C)` and `mask (B,T)`, storing `g (B,C)`,
/// `mean (B)` and `n (B,C)` for the backward pass.
///
/// The sums of squares run in f64: they cannot overflow for any finite f32 input, so N is
/// always finite and in [0, C] (G_c ≤ C·μ). Each real output is computed as
/// `a_c·x − (0 − β_c)` with `a_c = 1 + γ_c·N_c`, which equals `γ_c·(x·N_c) + β_c + x` up to
/// rounding and is exactly `x` when γ_c = β_c = 0: then `a_c = 1 + 0·N = 1`, `1·x = x`, and
/// `0 − 0 = +0`, and `x − (+0)` is `x` for every x including −0.0 (whereas `x + 0` would turn
/// −0.0 into +0.0). Sequences are independent, so they run in parallel and the result does not
/// depend on the thread count.
///
/// # Panics
/// If a buffer's length does not match B, T, C.
pub fn grn_sequence_forward(
    out: &mut [f32],
    stats: GrnSeqStats<&mut [f32]>,
    input: Masked<&[f32]>,
    p: GrnParams<&[f32]>,
    s: GrnShape,
) {
    let (GrnSeqStats { g, mean, n }, Masked { x, mask }) = (stats, input);
    let (GrnParams { gamma, beta }, GrnShape { b, t, c, eps }) = (p, s);
    check_shapes("grn_sequence_forward", x.len(), mask.len(), gamma.len(), b, t, c);
    assert_eq!(beta.len(), c, "grn_sequence_forward: beta has {} values, expected C = {c}", beta.len());
    assert_eq!(out.len(), x.len(), "grn_sequence_forward: out must be (B,T,C)");
    assert!(
        g.len() == b * c && n.len() == b * c && mean.len() == b,
        "grn_sequence_forward: g, n must be (B,C), mean (B)"
    );
    if b * t * c == 0 {
        mean.iter_mut().for_each(|m| *m = 0.0);
        g.iter_mut().chain(n.iter_mut()).for_each(|v| *v = 0.0);
        return;
    }
    // β enters as a subtraction of (0 − β) so that zero β leaves −0.0 inputs alone (see above).
    let neg_beta: Vec<f32> = beta.iter().map(|&v| 0.0 - v).collect();
    let tc = t * c;
    out.par_chunks_mut(tc)
        .zip(x.par_chunks(tc))
        .zip(mask.par_chunks(t))
        .zip(g.par_chunks_mut(c).zip(n.par_chunks_mut(c)).zip(mean.par_iter_mut()))
        .for_each(|(((o, xb), mb), ((gb, nb), mu))| {
            // G (C): sums of squares over the real positions only.
            let mut sumsq = vec![0.0f64; c];
            for (ti, &m) in mb.iter().enumerate() {
                if is_real(m) {
                    for (s, &v) in sumsq.iter_mut().zip(&xb[ti * c..(ti + 1) * c]) {
                        *s += v as f64 * v as f64;
                    }
                }
            }
            let norms: Vec<f64> = sumsq.iter().map(|s| s.sqrt()).collect();
            let m64 = norms.iter().sum::<f64>() / c as f64;
            let d = m64 + eps as f64;
            for j in 0..c {
                gb[j] = norms[j] as f32;
                // d is 0 only when every norm is 0 (and eps = 0): N = 0 then, not 0/0.
                nb[j] = if d > 0.0 { (norms[j] / d) as f32 } else { 0.0 };
            }
            *mu = m64 as f32;
            let a: Vec<f32> = gamma.iter().zip(nb.iter()).map(|(&gm, &nv)| 1.0 + gm * nv).collect();
            for ((orow, xrow), &m) in o.chunks_mut(c).zip(xb.chunks(c)).zip(mb) {
                if is_real(m) {
                    for j in 0..c {
                        orow[j] = a[j] * xrow[j] - neg_beta[j];
                    }
                } else {
                    orow.copy_from_slice(xrow);
                }
            }
        });
}

/// Sequence-wide GRN backward: overwrites `dx (B,T,C)` and accumulates `dgamma (C)`, `dbeta (C)` given
/// `dy (B,T,C)`, the forward input `x` and the `g`, `mean`, `n` its forward stored.
///
/// Per sequence, with D = μ + eps, a_c = 1 + γ_c·N_c and sums over real positions only:
///
/// ```text
/// S_c    = Σ_t dy[t,c]·x[t,c]
/// dβ_c  += Σ_t dy[t,c]
/// dγ_c  += N_c·S_c
/// ∂L/∂N_c = γ_c·S_c
/// ∂L/∂G_c = ∂L/∂N_c / D − (Σ_k ∂L/∂N_k·G_k) / (C·D²)     N_k = G_k / D, ∂D/∂G_c = 1/C
/// dx[t,c] = a_c·dy[t,c] + (∂L/∂G_c / G_c)·x[t,c]          ∂G_c/∂x[t,c] = x[t,c] / G_c
/// dx[t,c] = dy[t,c]                                       at padding positions (y = x there)
/// ```
///
/// Where G_c = 0 every real x[·,c] is 0 and the norm has no derivative; the second term is
/// taken as 0 there (PyTorch's choice for the norm of a zero vector). The reductions run in
/// f64; the per-sequence parameter gradients are summed over sequences in order, so the
/// result does not depend on the thread count.
///
/// # Panics
/// If a buffer's length does not match B, T, C.
pub fn grn_sequence_backward(
    dx: &mut [f32],
    dp: GrnParams<&mut [f32]>,
    dy: &[f32],
    input: Masked<&[f32]>,
    gamma: &[f32],
    stats: GrnSeqStats<&[f32]>,
    s: GrnShape,
) {
    let (GrnParams { gamma: dgamma, beta: dbeta }, GrnSeqStats { g, mean, n }) = (dp, stats);
    let (Masked { x, mask }, GrnShape { b, t, c, eps }) = (input, s);
    check_shapes("grn_sequence_backward", x.len(), mask.len(), gamma.len(), b, t, c);
    assert!(dx.len() == x.len() && dy.len() == x.len(), "grn_sequence_backward: dx and dy must be (B,T,C)");
    assert!(dgamma.len() == c && dbeta.len() == c, "grn_sequence_backward: dgamma and dbeta must be (C)");
    assert!(
        g.len() == b * c && n.len() == b * c && mean.len() == b,
        "grn_sequence_backward: g, n must be (B,C), mean (B)"
    );
    if b * t * c == 0 {
        return;
    }
    let tc = t * c;
    // Per sequence: N_c·S_c (C) then Σ_t dy (C), summed over sequences afterwards.
    let mut partial = vec![0.0f64; b * 2 * c];
    dx.par_chunks_mut(tc).zip(partial.par_chunks_mut(2 * c)).enumerate().for_each(|(bi, (dxb, pb))| {
        let xb = &x[bi * tc..(bi + 1) * tc];
        let dyb = &dy[bi * tc..(bi + 1) * tc];
        let mb = &mask[bi * t..(bi + 1) * t];
        let gb = &g[bi * c..(bi + 1) * c];
        let nb = &n[bi * c..(bi + 1) * c];
        let (s, sb) = pb.split_at_mut(c);
        for ti in (0..t).filter(|&ti| is_real(mb[ti])) {
            let (xr, dr) = (&xb[ti * c..(ti + 1) * c], &dyb[ti * c..(ti + 1) * c]);
            for j in 0..c {
                s[j] += dr[j] as f64 * xr[j] as f64;
                sb[j] += dr[j] as f64;
            }
        }
        let d = mean[bi] as f64 + eps as f64;
        // Σ_k ∂L/∂N_k·G_k: the part of every ∂L/∂G_c that flows through the mean.
        let k: f64 = (0..c).map(|j| gamma[j] as f64 * s[j] * gb[j] as f64).sum();
        let coef: Vec<f32> = (0..c)
            .map(|j| {
                if gb[j] > 0.0 {
                    let dg = gamma[j] as f64 * s[j] / d - k / (c as f64 * d * d);
                    (dg / gb[j] as f64) as f32
                } else {
                    0.0
                }
            })
            .collect();
        let a: Vec<f32> = gamma.iter().zip(nb).map(|(&gm, &nv)| 1.0 + gm * nv).collect();
        for (ti, (dxr, (xr, dr))) in dxb.chunks_mut(c).zip(xb.chunks(c).zip(dyb.chunks(c))).enumerate() {
            if is_real(mb[ti]) {
                for j in 0..c {
                    dxr[j] = a[j] * dr[j] + coef[j] * xr[j];
                }
            } else {
                dxr.copy_from_slice(dr);
            }
        }
        // S is no longer needed: turn it into this sequence's dγ contribution in place.
        for j in 0..c {
            s[j] *= nb[j] as f64;
        }
    });
    add_param_partials(dgamma, dbeta, &partial, c);
}

/// Adds the per-sequence parameter partials `partial (B, 2C)` (dγ terms, then dβ terms) into
/// `dgamma`, `dbeta`, summed over sequences in order: both backwards end with it, and the fixed
/// order keeps the result independent of the thread count.
fn add_param_partials(dgamma: &mut [f32], dbeta: &mut [f32], partial: &[f64], c: usize) {
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

impl GrnOps for CpuBackend {
    fn grn_causal_forward(
        &self,
        out: &mut Vec<f32>,
        stats: GrnCausalStats<&mut Vec<f32>>,
        x: &Vec<f32>,
        p: GrnParams<&Vec<f32>>,
        s: GrnShape,
    ) {
        let stats = stats.map(Vec::as_mut_slice);
        self.run(|| grn_causal_forward(out, stats, x, p.map(Vec::as_slice), s));
    }
    fn grn_causal_backward(
        &self,
        dx: &mut Vec<f32>,
        dp: GrnParams<&mut Vec<f32>>,
        dy: &Vec<f32>,
        x: &Vec<f32>,
        gamma: &Vec<f32>,
        stats: GrnCausalStats<&Vec<f32>>,
        s: GrnShape,
    ) {
        let dp = dp.map(Vec::as_mut_slice);
        let stats = stats.map(Vec::as_slice);
        self.run(|| grn_causal_backward(dx, dp, dy, x, gamma, stats, s));
    }
    fn grn_causal_step(
        &self,
        out: &mut Vec<f32>,
        sumsq: &mut Vec<f32>,
        x: &Vec<f32>,
        seq: &Vec<u32>,
        p: GrnParams<&Vec<f32>>,
        s: GrnStepShape,
    ) {
        grn_causal_step(out, sumsq, x, seq, p.map(Vec::as_slice), s);
    }
    fn grn_sequence_forward(
        &self,
        out: &mut Vec<f32>,
        stats: GrnSeqStats<&mut Vec<f32>>,
        input: Masked<&Vec<f32>>,
        p: GrnParams<&Vec<f32>>,
        s: GrnShape,
    ) {
        let stats = stats.map(Vec::as_mut_slice);
        let input = input.map(Vec::as_slice);
        self.run(|| grn_sequence_forward(out, stats, input, p.map(Vec::as_slice), s));
    }
    fn grn_sequence_backward(
        &self,
        dx: &mut Vec<f32>,
        dp: GrnParams<&mut Vec<f32>>,
        dy: &Vec<f32>,
        input: Masked<&Vec<f32>>,
        gamma: &Vec<f32>,
        stats: GrnSeqStats<&Vec<f32>>,
        s: GrnShape,
    ) {
        let dp = dp.map(Vec::as_mut_slice);
        let input = input.map(Vec::as_slice);
        let stats = stats.map(Vec::as_slice);
        self.run(|| grn_sequence_backward(dx, dp, dy, input, gamma, stats, s));
    }
}

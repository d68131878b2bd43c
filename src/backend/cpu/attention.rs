//! Causal multi-head self-attention. Each query row's softmax is summarised by its
//! log-sum-exp, and the backward pass recomputes the probabilities from it, so no (T,T) matrix
//! outlives a call. Per (batch row, head) the scores, the weighted sum and the gradients are
//! products of (T,HS) and (T,T) matrices, done with `gemm` on a per-worker (T,T) scratch:
//! blocked products run several times faster than row-by-row dot products, even counting the
//! masked upper triangle they compute and discard.
//!
//! Layout: `qkv (B,T,3C)` with q in channels [0,C), k in [C,2C), v in [2C,3C); head h owns
//! channels [h·HS, (h+1)·HS) of each, HS = C/NH.
//!
//! KV-cache decoding: cache layout `k_cache`, `v_cache` (B, T_max, C), the same channel layout
//! as the k and v thirds of `qkv`, so storing a row is one contiguous copy per cache; head h
//! owns channels [h·HS, (h+1)·HS), HS = C/NH.

use super::encoder::SendPtr;
use super::fastmath::{dot, exp};
use super::matmul::{product, View};
use super::simd::avx2_dispatch;
use super::{rows_per_task, CpuBackend};
use crate::backend::ops::AttentionOps;
use crate::backend::shapes::{AttentionShape, CachedShape, KvBufs};
use rayon::prelude::*;

/// `out (B,T,C)`, `lse (B,NH,T)` from `qkv (B,T,3C)`; B is implied by the buffer sizes.
fn attention_forward(out: &mut [f32], lse: &mut [f32], qkv: &[f32], t: usize, nh: usize, c: usize) {
    let out = SendPtr(out.as_mut_ptr());
    // lse is laid out (B,NH,T), so one (b,h) pair owns one contiguous chunk of T values.
    // The (T,T) probabilities are scratch per worker (for_each_init), not per (b,h) task.
    lse.par_chunks_mut(t).enumerate().for_each_init(
        || vec![0.0f32; t * t],
        |p, (bh, lse_row)| head_forward(Head { qkv, dqkv: out, t, nh, c, bh }, p, lse_row),
    );
}

/// One (batch row, head) task of the training attention: the input, the output pointer it
/// writes its own channels through, and the shapes.
#[derive(Clone, Copy)]
struct Head<'a> {
    qkv: &'a [f32],
    /// `out (B,T,C)` in the forward pass, `dqkv (B,T,3C)` in the backward.
    dqkv: SendPtr,
    t: usize,
    nh: usize,
    c: usize,
    /// The task: batch row bh / NH, head bh mod NH.
    bh: usize,
}

impl Head<'_> {
    /// Batch row, head, head size HS.
    fn split(&self) -> (usize, usize, usize) {
        (self.bh / self.nh, self.bh % self.nh, self.c / self.nh)
    }

    /// Offset of the head's channels of part `part` (0 q, 1 k, 2 v) in row 0 of its batch row
    /// of qkv (B,T,3C).
    fn qkv_at(&self, part: usize) -> usize {
        let (bi, h, hs) = self.split();
        bi * self.t * 3 * self.c + part * self.c + h * hs
    }

    /// The head's (T,HS) slice of q, k or v as a matrix (row stride 3C), or its transpose.
    fn part(&self, part: usize, transposed: bool) -> View {
        let ptr = self.qkv[self.qkv_at(part)..].as_ptr();
        let (rs, cs) = (3 * self.c as isize, 1);
        if transposed {
            View { ptr, rs: cs, cs: rs }
        } else {
            View { ptr, rs, cs }
        }
    }
}

avx2_dispatch! {
    /// [`attention_forward`] for one (batch row, head), as two products around a row softmax:
    /// S = q·kᵀ (T,T), P = softmax(S·scale) causally (lse_row (T) keeps each row's
    /// log-sum-exp), out = P·v, with `p` (T·T) as scratch.
    fn head_forward(x: Head<'_>, p: &mut [f32], lse_row: &mut [f32]) {
        let (t, c) = (x.t, x.c);
        let (bi, h, hs) = x.split();
        let scale = 1.0 / (hs as f32).sqrt();
        // SAFETY: the views cover the head's (T,HS) channels of q and k inside qkv (B,T,3C),
        // and `p` holds T·T values; `p` is the worker's own scratch.
        unsafe { product(p.as_mut_ptr(), t, x.part(0, false), x.part(1, true), (t, t, hs), false) };
        for (ti, row) in p.chunks_exact_mut(t).enumerate() {
            let (seen, future) = row.split_at_mut(ti + 1);
            let mut max = f32::NEG_INFINITY;
            for s in seen.iter_mut() {
                *s *= scale;
                max = max.max(*s);
            }
            let mut sum = 0.0f32;
            for s in seen.iter_mut() {
                *s = exp(*s - max);
                sum += *s;
            }
            lse_row[ti] = max + sum.ln();
            let inv = 1.0 / sum;
            seen.iter_mut().for_each(|s| *s *= inv);
            future.fill(0.0);
        }
        // SAFETY: `p` (T,T) and the head's (T,HS) channels of v are inside their buffers; the
        // destination is this (b,h) pair's channels [h·HS, (h+1)·HS) of out (B,T,C) rows
        // bi·T .. bi·T+T, which no other task writes.
        unsafe {
            let dst = x.dqkv.get().add(bi * t * c + h * hs);
            let pv = View { ptr: p.as_ptr(), rs: t as isize, cs: 1 };
            product(dst, c, pv, x.part(2, false), (t, hs, t), false);
        }
    }
}

/// Overwrites `dqkv (B,T,3C)` given `dout (B,T,C)` and the forward's `qkv`, `out`, `lse`.
///
/// With P the softmax, S = q·kᵀ·scale: dV = Pᵀ·dO, dP = dO·Vᵀ, dS = P∘(dP − rowsum(dO∘O)),
/// dQ = dS·K·scale, dK = dSᵀ·Q·scale.
fn attention_backward(dqkv: &mut [f32], dout: &[f32], qkv: &[f32], out: &[f32], lse: &[f32], s: AttentionShape) {
    let AttentionShape { b, t, nh, c } = s;
    let dqkv = SendPtr(dqkv.as_mut_ptr());
    (0..b * nh).into_par_iter().for_each_init(
        || vec![0.0f32; 2 * t * t],
        |scratch, bh| head_backward(Head { qkv, dqkv, t, nh, c, bh }, scratch, [dout, out, lse]),
    );
}

avx2_dispatch! {
    /// [`attention_backward`] for one (batch row, head): its channels of `dqkv` (through
    /// `x.dqkv`) from `[dout, out, lse]` of the forward, with `scratch` (2·T·T) for P and dS.
    fn head_backward(x: Head<'_>, scratch: &mut [f32], grads: [&[f32]; 3]) {
        let [dout, out, lse] = grads;
        let (t, c) = (x.t, x.c);
        let (bi, h, hs) = x.split();
        let scale = 1.0 / (hs as f32).sqrt();
        let (p, ds) = scratch.split_at_mut(t * t);
        let lse = &lse[x.bh * t..][..t];
        let dout_view = View { ptr: dout[bi * t * c + h * hs..].as_ptr(), rs: c as isize, cs: 1 };
        // SAFETY (all products below): the q, k, v views and `dout_view` cover the head's
        // (T,HS) channels inside qkv (B,T,3C) and dout (B,T,C); `p` and `ds` are this worker's
        // (T,T) scratch; the destinations are this (b,h) pair's channels of the q, k, v thirds
        // of dqkv rows bi·T .. bi·T+T, which no other task touches.
        unsafe {
            // P recomputed from the saved log-sum-exp: exp(S·scale − lse), causal.
            product(p.as_mut_ptr(), t, x.part(0, false), x.part(1, true), (t, t, hs), false);
            // dP = dO·vᵀ.
            product(ds.as_mut_ptr(), t, dout_view, x.part(2, true), (t, t, hs), false);
        }
        for ti in 0..t {
            let row = (bi * t + ti) * c + h * hs;
            let dd = dot(&dout[row..][..hs], &out[row..][..hs]);
            let (pr, dr) = (&mut p[ti * t..][..t], &mut ds[ti * t..][..t]);
            for t2 in 0..=ti {
                let pv = exp(pr[t2] * scale - lse[ti]);
                pr[t2] = pv;
                dr[t2] = pv * (dr[t2] - dd) * scale;
            }
            pr[ti + 1..].fill(0.0);
            dr[ti + 1..].fill(0.0);
        }
        let (pv, dsv) = (View { ptr: p.as_ptr(), rs: t as isize, cs: 1 }, View { ptr: ds.as_ptr(), rs: t as isize, cs: 1 });
        let transpose = |v: View| View { ptr: v.ptr, rs: v.cs, cs: v.rs };
        // SAFETY: as above; each destination is one of the head's (T,HS) thirds of dqkv.
        unsafe {
            let d = |part: usize| x.dqkv.get().add(x.qkv_at(part));
            // dQ = dS·k, dK = dSᵀ·q, dV = Pᵀ·dO.
            product(d(0), 3 * c, dsv, x.part(1, false), (t, hs, t), false);
            product(d(1), 3 * c, transpose(dsv), x.part(0, false), (t, hs, t), false);
            product(d(2), 3 * c, transpose(pv), dout_view, (t, hs, t), false);
        }
    }
}

/// Stores each row's k, v at (`seq[r]`, `pos[r]`) of the caches, then `out (R,C)`: row r's q
/// attends causally over slots `0..=pos[r]` of sequence `seq[r]`.
///
/// The arithmetic per (row, head) is [`attention_forward`]'s (scaled dot products,
/// max-subtracted exponentials summed left to right, weights p/Σp applied to v) one row at a
/// time; the full pass forms the same sums through `gemm`'s blocked order, so the two agree to
/// f32 rounding (a few ulp), not bit for bit.
fn attention_cached(
    out: &mut [f32],
    cache: KvBufs<&mut [f32]>,
    qkv: &[f32],
    seq: &[u32],
    pos: &[u32],
    (t_max, nh, c): (usize, usize, usize),
) {
    let KvBufs { k: k_cache, v: v_cache } = cache;
    let hs = c / nh;
    let scale = 1.0 / (hs as f32).sqrt();
    // Phase 1: store. R·2C copies, negligible next to the attention itself, so sequential
    // (which also keeps it free of any aliasing argument).
    for (r, (&s, &p)) in seq.iter().zip(pos).enumerate() {
        let slot = (s as usize * t_max + p as usize) * c;
        let row = &qkv[r * 3 * c..][..3 * c];
        k_cache[slot..slot + c].copy_from_slice(&row[c..2 * c]);
        v_cache[slot..slot + c].copy_from_slice(&row[2 * c..]);
    }
    let (k_cache, v_cache) = (&*k_cache, &*v_cache);
    // Phase 2: attend. out (R,C) split into HS-sized chunks is exactly one chunk per
    // (row, head) task; the score row is per-worker scratch.
    out.par_chunks_mut(hs).enumerate().with_min_len(rows_per_task(hs * (t_max + 1))).for_each_init(
        || vec![0.0f32; t_max],
        |scores, (rh, o)| {
            let (r, h) = (rh / nh, rh % nh);
            let (s, p) = (seq[r] as usize, pos[r] as usize);
            let q = &qkv[r * 3 * c + h * hs..][..hs];
            let base = s * t_max * c + h * hs;
            let mut max = f32::NEG_INFINITY;
            for (t2, sc) in scores.iter_mut().enumerate().take(p + 1) {
                *sc = dot(q, &k_cache[base + t2 * c..][..hs]) * scale;
                max = max.max(*sc);
            }
            let mut sum = 0.0f32;
            for sc in scores.iter_mut().take(p + 1) {
                *sc = exp(*sc - max);
                sum += *sc;
            }
            let inv = 1.0 / sum;
            o.fill(0.0);
            for (t2, &pv) in scores.iter().enumerate().take(p + 1) {
                let w = pv * inv;
                for (o, v) in o.iter_mut().zip(&v_cache[base + t2 * c..][..hs]) {
                    *o += w * v;
                }
            }
        },
    );
}

impl AttentionOps for CpuBackend {
    fn attention_forward(&self, out: &mut Vec<f32>, lse: &mut Vec<f32>, qkv: &Vec<f32>, s: AttentionShape) {
        let AttentionShape { b, t, nh, c } = s;
        assert!(
            nh > 0 && out.len() == b * t * c && lse.len() == b * nh * t && qkv.len() == 3 * b * t * c && c % nh == 0,
            "attention_forward: buffer sizes do not match B={b} T={t} NH={nh} C={c}"
        );
        self.run(|| attention_forward(out, lse, qkv, t, nh, c));
    }
    fn attention_backward(
        &self,
        dqkv: &mut Vec<f32>,
        dout: &Vec<f32>,
        qkv: &Vec<f32>,
        out: &Vec<f32>,
        lse: &Vec<f32>,
        s: AttentionShape,
    ) {
        let AttentionShape { b, t, nh, c } = s;
        assert!(
            nh > 0
                && dqkv.len() == 3 * b * t * c
                && dout.len() == b * t * c
                && out.len() == b * t * c
                && lse.len() == b * nh * t
                && qkv.len() == 3 * b * t * c
                && c % nh == 0,
            "attention_backward: buffer sizes do not match B={b} T={t} NH={nh} C={c}"
        );
        self.run(|| attention_backward(dqkv, dout, qkv, out, lse, s));
    }
    fn attention_cached(
        &self,
        out: &mut Vec<f32>,
        cache: KvBufs<&mut Vec<f32>>,
        qkv: &Vec<f32>,
        seq: &Vec<u32>,
        pos: &Vec<u32>,
        s: CachedShape,
    ) {
        let CachedShape { rows, t_max, nh, c } = s;
        let KvBufs { k: k_cache, v: v_cache } = cache;
        let b = k_cache.len().checked_div(t_max * c).unwrap_or(0);
        assert!(
            nh > 0
                && c % nh == 0
                && out.len() == rows * c
                && qkv.len() == rows * 3 * c
                && seq.len() == rows
                && pos.len() == rows
                && k_cache.len() == b * t_max * c
                && v_cache.len() == k_cache.len()
                && seq.iter().zip(pos).all(|(&s, &p)| (s as usize) < b && (p as usize) < t_max),
            "attention_cached: buffer sizes, sequences or positions do not match R={rows} T_max={t_max} NH={nh} C={c}"
        );
        let cache = KvBufs { k: k_cache, v: v_cache }.map(Vec::as_mut_slice);
        self.run(|| attention_cached(out, cache, qkv, seq, pos, (t_max, nh, c)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::rng::Rng;

    #[test]
    fn cached_attention_over_a_whole_prefix_equals_full_causal_attention() {
        // One sequence of T rows prefilled in a single call must reproduce the training op
        // (to f32 rounding: the training op sums through gemm's blocked order), and decoding
        // the last row alone afterwards must give that row again, bit for bit (same code).
        let (t, nh, c, t_max) = (7usize, 2usize, 8usize, 10usize);
        let mut rng = Rng::new(9);
        let qkv: Vec<f32> = (0..t * 3 * c).map(|_| rng.normal()).collect();
        let (mut want, mut lse) = (vec![0.0; t * c], vec![0.0; nh * t]);
        attention_forward(&mut want, &mut lse, &qkv, t, nh, c);

        // Sequence 1 of a two-sequence cache, so the sequence offset is exercised.
        let (mut kc, mut vc) = (vec![f32::NAN; 2 * t_max * c], vec![f32::NAN; 2 * t_max * c]);
        let seq = vec![1u32; t];
        let pos: Vec<u32> = (0..t as u32).collect();
        let mut out = vec![0.0; t * c];
        attention_cached(&mut out, KvBufs { k: &mut kc, v: &mut vc }, &qkv, &seq, &pos, (t_max, nh, c));
        // Outputs are convex combinations of unit normals (|x| ≲ 4): a few ulp of that.
        for (o, w) in out.iter().zip(&want) {
            assert!((o - w).abs() <= 2e-6, "{o} vs {w}");
        }

        let last = &qkv[(t - 1) * 3 * c..];
        let mut one = vec![0.0; c];
        attention_cached(&mut one, KvBufs { k: &mut kc, v: &mut vc }, last, &[1], &[t as u32 - 1], (t_max, nh, c));
        assert_eq!(one, out[(t - 1) * c..]);
        // Sequence 0 was never written, and slots past T of sequence 1 were never read.
        assert!(kc[..t_max * c].iter().all(|x| x.is_nan()));
    }
}

//! Causal multi-head self-attention, written the way a flash-attention kernel works: each
//! query row's softmax is summarised by its log-sum-exp, and the backward pass recomputes the
//! probabilities from it, so no (T,T) matrix is ever stored.
//!
//! Layout: `qkv (B,T,3C)` with q in channels [0,C), k in [C,2C), v in [2C,3C); head h owns
//! channels [h·HS, (h+1)·HS) of each, HS = C/NH.
//!
//! KV-cache decoding: cache layout `k_cache`, `v_cache` (B, T_max, C), the same channel layout
//! as the k and v thirds of `qkv`, so storing a row is one contiguous copy per cache; head h
//! owns channels [h·HS, (h+1)·HS), HS = C/NH.

use super::encoder::SendPtr;
use super::fastmath::{dot, exp};
use super::CpuBackend;
use crate::backend::ops::AttentionOps;
use crate::backend::shapes::{AttentionShape, CachedShape, KvBufs};
use rayon::prelude::*;

/// `out (B,T,C)`, `lse (B,NH,T)` from `qkv (B,T,3C)`; B is implied by the buffer sizes.
fn attention_forward(out: &mut [f32], lse: &mut [f32], qkv: &[f32], t: usize, nh: usize, c: usize) {
    let hs = c / nh;
    let scale = 1.0 / (hs as f32).sqrt();
    let out_ptr = SendPtr(out.as_mut_ptr());
    // lse is laid out (B,NH,T), so one (b,h) pair owns one contiguous chunk of T values.
    // The score row is scratch per worker (for_each_init), not per (b,h) task.
    lse.par_chunks_mut(t).enumerate().for_each_init(
        || vec![0.0f32; t],
        |p, (bh, lse_row)| {
            let (bi, h) = (bh / nh, bh % nh);
            for ti in 0..t {
                let q = &qkv[(bi * t + ti) * 3 * c + h * hs..][..hs];
                let mut max = f32::NEG_INFINITY;
                for (t2, s) in p.iter_mut().enumerate().take(ti + 1) {
                    let k = &qkv[(bi * t + t2) * 3 * c + c + h * hs..][..hs];
                    *s = dot(q, k) * scale;
                    max = max.max(*s);
                }
                let mut sum = 0.0f32;
                for s in p.iter_mut().take(ti + 1) {
                    *s = exp(*s - max);
                    sum += *s;
                }
                lse_row[ti] = max + sum.ln();
                let inv = 1.0 / sum;
                // SAFETY: (bi, ti, h) addresses channels [h·HS, (h+1)·HS) of row (bi, ti); each
                // (b,h) pair is handled by exactly one task, so writes never overlap; in bounds
                // since bi < B, ti < T, h·HS + HS ≤ C.
                let o = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add((bi * t + ti) * c + h * hs), hs) };
                o.fill(0.0);
                for (t2, &pv) in p.iter().enumerate().take(ti + 1) {
                    let v = &qkv[(bi * t + t2) * 3 * c + 2 * c + h * hs..][..hs];
                    let w = pv * inv;
                    for (o, v) in o.iter_mut().zip(v) {
                        *o += w * v;
                    }
                }
            }
        },
    );
}

/// Overwrites `dqkv (B,T,3C)` given `dout (B,T,C)` and the forward's `qkv`, `out`, `lse`.
///
/// With P the softmax, S = q·kᵀ·scale: dV = Pᵀ·dO, dP = dO·Vᵀ, dS = P∘(dP − rowsum(dO∘O)),
/// dQ = dS·K·scale, dK = dSᵀ·Q·scale.
fn attention_backward(dqkv: &mut [f32], dout: &[f32], qkv: &[f32], out: &[f32], lse: &[f32], s: AttentionShape) {
    let AttentionShape { b, t, nh, c } = s;
    let hs = c / nh;
    let scale = 1.0 / (hs as f32).sqrt();
    let d_ptr = SendPtr(dqkv.as_mut_ptr());
    (0..b * nh).into_par_iter().for_each(|bh| {
        let (bi, h) = (bh / nh, bh % nh);
        // SAFETY (for every slice made from d_ptr below): task (bi, h) only touches channels
        // [h·HS, (h+1)·HS) of the q, k and v thirds of batch row bi, which no other task
        // touches; offsets stay below B·T·3C.
        let at = |ti: usize, part: usize| unsafe {
            std::slice::from_raw_parts_mut(d_ptr.get().add((bi * t + ti) * 3 * c + part * c + h * hs), hs)
        };
        for ti in 0..t {
            at(ti, 0).fill(0.0);
            at(ti, 1).fill(0.0);
            at(ti, 2).fill(0.0);
        }
        for ti in 0..t {
            let row = bi * t + ti;
            let q = &qkv[row * 3 * c + h * hs..][..hs];
            let dout_t = &dout[row * c + h * hs..][..hs];
            let out_t = &out[row * c + h * hs..][..hs];
            let l = lse[bh * t + ti];
            let dd = dot(dout_t, out_t);
            let dq = at(ti, 0);
            for t2 in 0..=ti {
                let k = &qkv[(bi * t + t2) * 3 * c + c + h * hs..][..hs];
                let v = &qkv[(bi * t + t2) * 3 * c + 2 * c + h * hs..][..hs];
                let p = exp(dot(q, k) * scale - l);
                let ds = p * (dot(dout_t, v) - dd) * scale;
                for (dq, k) in dq.iter_mut().zip(k) {
                    *dq += ds * k;
                }
                for (dk, q) in at(t2, 1).iter_mut().zip(q) {
                    *dk += ds * q;
                }
                for (dv, g) in at(t2, 2).iter_mut().zip(dout_t) {
                    *dv += p * g;
                }
            }
        }
    });
}

/// Stores each row's k, v at (`seq[r]`, `pos[r]`) of the caches, then `out (R,C)`: row r's q
/// attends causally over slots `0..=pos[r]` of sequence `seq[r]`.
///
/// The arithmetic per (row, head) is [`attention_forward`]'s in the same
/// order (scaled dot products, max-subtracted exponentials summed left to right, weights
/// p/Σp applied to v), so for equal q, k, v the outputs are bit-identical to the full pass.
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
    out.par_chunks_mut(hs).enumerate().for_each_init(
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
        // One sequence of T rows prefilled in a single call must reproduce the training
        // op exactly (same arithmetic order), and decoding the last row alone afterwards
        // must give that row again.
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
        assert_eq!(out, want);

        let last = &qkv[(t - 1) * 3 * c..];
        let mut one = vec![0.0; c];
        attention_cached(&mut one, KvBufs { k: &mut kc, v: &mut vc }, last, &[1], &[t as u32 - 1], (t_max, nh, c));
        assert_eq!(one, want[(t - 1) * c..]);
        // Sequence 0 was never written, and slots past T of sequence 1 were never read.
        assert!(kc[..t_max * c].iter().all(|x| x.is_nan()));
    }
}

//! The two ops KV-cache generation adds to the training forward pass: an embedding at
//! per-row positions, and attention of new rows against the cached keys and values.
//!
//! Cache layout: `k_cache`, `v_cache` (B, T_max, C), the same channel layout as the k and v
//! thirds of `qkv`, so storing a row is one contiguous copy per cache; head h owns channels
//! [h·HS, (h+1)·HS), HS = C/NH.

use super::fastmath::{dot, exp};
use rayon::prelude::*;

/// `out (R,C) = wte[ids[r]] + wpe[pos[r]]`.
pub fn encoder_forward_at(out: &mut [f32], ids: &[u32], pos: &[u32], wte: &[f32], wpe: &[f32], c: usize) {
    out.par_chunks_mut(c).zip(ids.par_iter().zip(pos.par_iter())).for_each(|(o, (&id, &p))| {
        let tok = &wte[id as usize * c..][..c];
        let at = &wpe[p as usize * c..][..c];
        for ((o, a), b) in o.iter_mut().zip(tok).zip(at) {
            *o = a + b;
        }
    });
}

/// Stores each row's k, v at (`seq[r]`, `pos[r]`) of the caches, then `out (R,C)`: row r's q
/// attends causally over slots `0..=pos[r]` of sequence `seq[r]`.
///
/// The arithmetic per (row, head) is [`super::attention::attention_forward`]'s in the same
/// order (scaled dot products, max-subtracted exponentials summed left to right, weights
/// p/Σp applied to v), so for equal q, k, v the outputs are bit-identical to the full pass.
pub fn attention_cached(
    out: &mut [f32],
    k_cache: &mut [f32],
    v_cache: &mut [f32],
    qkv: &[f32],
    seq: &[u32],
    pos: &[u32],
    t_max: usize,
    nh: usize,
    c: usize,
) {
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
        super::super::attention::attention_forward(&mut want, &mut lse, &qkv, t, nh, c);

        // Sequence 1 of a two-sequence cache, so the sequence offset is exercised.
        let (mut kc, mut vc) = (vec![f32::NAN; 2 * t_max * c], vec![f32::NAN; 2 * t_max * c]);
        let seq = vec![1u32; t];
        let pos: Vec<u32> = (0..t as u32).collect();
        let mut out = vec![0.0; t * c];
        attention_cached(&mut out, &mut kc, &mut vc, &qkv, &seq, &pos, t_max, nh, c);
        assert_eq!(out, want);

        let last = &qkv[(t - 1) * 3 * c..];
        let mut one = vec![0.0; c];
        attention_cached(&mut one, &mut kc, &mut vc, last, &[1], &[t as u32 - 1], t_max, nh, c);
        assert_eq!(one, want[(t - 1) * c..]);
        // Sequence 0 was never written, and slots past T of sequence 1 were never read.
        assert!(kc[..t_max * c].iter().all(|x| x.is_nan()));
    }
}

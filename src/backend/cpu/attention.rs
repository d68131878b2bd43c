//! Causal multi-head self-attention, written the way a flash-attention kernel works: each
//! query row's softmax is summarised by its log-sum-exp, and the backward pass recomputes the
//! probabilities from it, so no (T,T) matrix is ever stored.
//!
//! Layout: `qkv (B,T,3C)` with q in channels [0,C), k in [C,2C), v in [2C,3C); head h owns
//! channels [h·HS, (h+1)·HS) of each, HS = C/NH.

use super::encoder::SendPtr;
use super::fastmath::{dot, exp};
use rayon::prelude::*;

/// `out (B,T,C)`, `lse (B,NH,T)` from `qkv (B,T,3C)`; B is implied by the buffer sizes.
pub fn attention_forward(out: &mut [f32], lse: &mut [f32], qkv: &[f32], t: usize, nh: usize, c: usize) {
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
pub fn attention_backward(
    dqkv: &mut [f32],
    dout: &[f32],
    qkv: &[f32],
    out: &[f32],
    lse: &[f32],
    b: usize,
    t: usize,
    nh: usize,
    c: usize,
) {
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

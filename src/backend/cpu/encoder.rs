//! Token + position embedding.

use super::{rows_per_task, CpuBackend};
use crate::backend::ops::EncoderOps;
use crate::backend::shapes::{Btc, RowsC};
use rayon::prelude::*;

/// `out (B,T,C) = wte[ids[b,t]] + wpe[t]`.
fn encoder_forward(out: &mut [f32], ids: &[u32], wte: &[f32], wpe: &[f32], t: usize, c: usize) {
    out.par_chunks_mut(c).zip(ids.par_iter()).enumerate().with_min_len(rows_per_task(c)).for_each(|(row, (o, &id))| {
        let tok = &wte[id as usize * c..(id as usize + 1) * c];
        let pos = &wpe[(row % t) * c..(row % t + 1) * c];
        for ((o, a), p) in o.iter_mut().zip(tok).zip(pos) {
            *o = a + p;
        }
    });
}

/// `dwte[ids] += dout`, `dwpe[t] += Σ_b dout[b,t]`. Rows are visited in order so that
/// repeated tokens add up deterministically; channels are split across threads instead.
fn encoder_backward(dwte: &mut [f32], dwpe: &mut [f32], dout: &[f32], ids: &[u32], t: usize, c: usize) {
    const CH: usize = 64;
    let v = dwte.len() / c;
    // Split the channel axis into stripes; each thread owns one stripe of every row.
    let stripes = c.div_ceil(CH);
    let wte_ptr = SendPtr(dwte.as_mut_ptr());
    let wpe_ptr = SendPtr(dwpe.as_mut_ptr());
    (0..stripes).into_par_iter().for_each(|s| {
        let (lo, hi) = (s * CH, ((s + 1) * CH).min(c));
        for (row, &id) in ids.iter().enumerate() {
            debug_assert!((id as usize) < v);
            let d = &dout[row * c + lo..row * c + hi];
            // SAFETY: stripes are disjoint column ranges [lo, hi), so no two threads touch
            // the same element; indices are in bounds because id < V and row % t < T.
            unsafe {
                let w = wte_ptr.get().add(id as usize * c + lo);
                let p = wpe_ptr.get().add((row % t) * c + lo);
                for (j, x) in d.iter().enumerate() {
                    *w.add(j) += x;
                    *p.add(j) += x;
                }
            }
        }
    });
}

/// A raw pointer that may cross threads; users state why their accesses are disjoint.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub *mut f32);
// SAFETY: the pointer is only dereferenced at indices that callers prove disjoint per thread.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}
impl SendPtr {
    /// The pointer. A method, so closures capture the whole wrapper (which is Send).
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// `out (R,C) = wte[ids[r]] + wpe[pos[r]]`.
fn encoder_forward_at(out: &mut [f32], ids: &[u32], pos: &[u32], wte: &[f32], wpe: &[f32], c: usize) {
    out.par_chunks_mut(c).zip(ids.par_iter().zip(pos.par_iter())).with_min_len(rows_per_task(c)).for_each(
        |(o, (&id, &p))| {
            let tok = &wte[id as usize * c..][..c];
            let at = &wpe[p as usize * c..][..c];
            for ((o, a), b) in o.iter_mut().zip(tok).zip(at) {
                *o = a + b;
            }
        },
    );
}

impl EncoderOps for CpuBackend {
    fn encoder_forward(&self, out: &mut Vec<f32>, ids: &Vec<u32>, wte: &Vec<f32>, wpe: &Vec<f32>, s: Btc) {
        assert!(
            out.len() == s.len() && ids.len() == s.rows() && wpe.len() >= s.t * s.c,
            "encoder_forward: buffer sizes do not match B={} T={} C={}",
            s.b,
            s.t,
            s.c
        );
        self.run(|| encoder_forward(out, ids, wte, wpe, s.t, s.c));
    }
    fn encoder_backward(&self, dwte: &mut Vec<f32>, dwpe: &mut Vec<f32>, dout: &Vec<f32>, ids: &Vec<u32>, s: Btc) {
        assert!(
            dout.len() == s.len() && ids.len() == s.rows() && dwpe.len() >= s.t * s.c,
            "encoder_backward: buffer sizes do not match B={} T={} C={}",
            s.b,
            s.t,
            s.c
        );
        self.run(|| encoder_backward(dwte, dwpe, dout, ids, s.t, s.c));
    }
    fn encoder_forward_at(
        &self,
        out: &mut Vec<f32>,
        ids: &Vec<u32>,
        pos: &Vec<u32>,
        wte: &Vec<f32>,
        wpe: &Vec<f32>,
        s: RowsC,
    ) {
        let RowsC { rows, c } = s;
        assert!(
            out.len() == rows * c
                && ids.len() == rows
                && pos.len() == rows
                && ids.iter().all(|&i| (i as usize + 1) * c <= wte.len())
                && pos.iter().all(|&p| (p as usize + 1) * c <= wpe.len()),
            "encoder_forward_at: buffer sizes, ids or positions do not match R={rows} C={c}"
        );
        self.run(|| encoder_forward_at(out, ids, pos, wte, wpe, c));
    }
}

//! Token + position embedding.

use rayon::prelude::*;

/// `out (B,T,C) = wte[ids[b,t]] + wpe[t]`.
pub fn encoder_forward(out: &mut [f32], ids: &[u32], wte: &[f32], wpe: &[f32], t: usize, c: usize) {
    out.par_chunks_mut(c).zip(ids.par_iter()).enumerate().for_each(|(row, (o, &id))| {
        let tok = &wte[id as usize * c..(id as usize + 1) * c];
        let pos = &wpe[(row % t) * c..(row % t + 1) * c];
        for ((o, a), p) in o.iter_mut().zip(tok).zip(pos) {
            *o = a + p;
        }
    });
}

/// `dwte[ids] += dout`, `dwpe[t] += Σ_b dout[b,t]`. Rows are visited in order so that
/// repeated tokens add up deterministically; channels are split across threads instead.
pub fn encoder_backward(dwte: &mut [f32], dwpe: &mut [f32], dout: &[f32], ids: &[u32], t: usize, c: usize) {
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

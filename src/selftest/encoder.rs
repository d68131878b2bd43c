//! Parity cases of the token + position embeddings (training layout and per-row positions).

use super::{case_seed, nans, randn, Report, Tol};
use crate::backend::cpu::CpuBackend;
use crate::backend::device::Device;
use crate::backend::kernel::KernelBackend;
use crate::backend::prelude::*;
use crate::backend::{Btc, RowsC};
use crate::util::rng::Rng;

pub(super) fn cases<D: Device>(kb: &KernelBackend<D>, seed: u64, rep: &mut Report) {
    let cpu = CpuBackend::new(Some(1));
    // (B, T, C, V, P): the small ragged shape (V = 37 < B·T·... so tokens repeat: several rows
    // add into one dwte row), and B·T·C > one full grid (grid-stride), with wpe holding more
    // positions than T (as GPT-2's 1024 do).
    let cases = [(2usize, 5usize, 48usize, 37usize, 9usize), (4, 67, 1000, 37, 70)];
    for (case, &(b, t, c, v, p)) in cases.iter().enumerate() {
        let shape = format!("B={b} T={t} C={c} V={v}");
        let mut rng = Rng::new(case_seed(seed, 1500 + case as u64));
        let tok = ids(&mut rng, b * t, v);
        let wte = randn(&mut rng, v * c, 1.0);
        let wpe = randn(&mut rng, p * c, 1.0);
        let dout = randn(&mut rng, b * t * c, 1.0);
        let dwte0 = randn(&mut rng, v * c, 1.0);
        let dwpe0 = randn(&mut rng, p * c, 1.0);
        let (d_ids, d_wte, d_wpe) = (kb.upload_ids(&tok), kb.upload(&wte), kb.upload(&wpe));

        rep.case("encoder_forward", &shape, |rep| {
            let mut want = vec![0.0; b * t * c];
            cpu.encoder_forward(&mut want, &tok, &wte, &wpe, Btc { b, t, c });
            let mut d_out = kb.upload(&nans(b * t * c));
            kb.encoder_forward(&mut d_out, &d_ids, &d_wte, &d_wpe, Btc { b, t, c });
            // One f32 addition of the same two values on both sides: bit-identical.
            rep.cmp("encoder_forward", &shape, &kb.download(&d_out), &want, Tol::Bits, "one addition: exact");
        });

        rep.case("encoder_backward", &shape, |rep| {
            let (mut dwte, mut dwpe) = (dwte0.clone(), dwpe0.clone());
            cpu.encoder_backward(&mut dwte, &mut dwpe, &dout, &tok, Btc { b, t, c });
            let (mut d_dwte, mut d_dwpe, d_dout) = (kb.upload(&dwte0), kb.upload(&dwpe0), kb.upload(&dout));
            kb.encoder_backward(&mut d_dwte, &mut d_dwpe, &d_dout, &d_ids, Btc { b, t, c });
            // Tolerance. Each dwte/dwpe value is its start value plus the dout values of the
            // rows sharing its token (≈ B·T/V ≤ 15 here) or position (B ≤ 4), added by
            // atomics in an unspecified order where the oracle adds in row order. Reordering a
            // k-term f32 sum moves it by ≤ k·2⁻²⁴·Σ|terms| ≈ 15·6e-8·15 ≈ 1.3e-5 in the worst
            // case, a few ulps of the scale (~10) typically: 2e-6 of the tensor's scale. A
            // dropped or misplaced row moves a value by O(1), ≥ 0.05 of the scale.
            let tol = Tol::Scale { tol: 2e-6, floor: 1.0 };
            let note = "of the scale (atomic order)";
            rep.cmp("encoder_backward/dwte", &shape, &kb.download(&d_dwte), &dwte, tol, note);
            rep.cmp("encoder_backward/dwpe", &shape, &kb.download(&d_dwpe), &dwpe, tol, note);
        });

        rep.case("encoder_forward_at", &shape, |rep| {
            // Rows at their own positions (any order, repeats), as decoding feeds them.
            let rows = b * t;
            let pos = ids(&mut rng.clone(), rows, p);
            let mut want = vec![0.0; rows * c];
            cpu.encoder_forward_at(&mut want, &tok, &pos, &wte, &wpe, RowsC { rows, c });
            let (mut d_out, d_pos) = (kb.upload(&nans(rows * c)), kb.upload_ids(&pos));
            kb.encoder_forward_at(&mut d_out, &d_ids, &d_pos, &d_wte, &d_wpe, RowsC { rows, c });
            rep.cmp("encoder_forward_at", &shape, &kb.download(&d_out), &want, Tol::Bits, "one addition: exact");
            // An id ≥ V or a position ≥ P (the oracle panics) gives a NaN row, the others stay.
            let (mut bad_ids, mut bad_pos) = (tok.clone(), pos.clone());
            bad_ids[0] = v as u32;
            bad_pos[rows - 1] = p as u32;
            let (bi, bp) = (kb.upload_ids(&bad_ids), kb.upload_ids(&bad_pos));
            kb.encoder_forward_at(&mut d_out, &bi, &bp, &d_wte, &d_wpe, RowsC { rows, c });
            let got = kb.download(&d_out);
            let nan_rows = got[..c].iter().chain(&got[(rows - 1) * c..]).all(|x| x.is_nan());
            let rest_ok = got[c..(rows - 1) * c] == want[c..(rows - 1) * c];
            rep.check("encoder_forward_at/out_of_range", &shape, nan_rows && rest_ok, "bad id / position → NaN row");
        });
    }
}

fn ids(rng: &mut Rng, n: usize, v: usize) -> Vec<u32> {
    (0..n).map(|_| rng.below(v) as u32).collect()
}

//! Parity cases of the fused log-softmax gather + entropy, forward and backward.

use super::{case_seed, randn, Report, Tol};
use crate::backend::cpu::CpuBackend;
use crate::backend::device::Device;
use crate::backend::kernel::KernelBackend;
use crate::backend::prelude::*;
use crate::backend::LogprobChunk;
use crate::util::rng::Rng;

pub(super) fn cases<D: Device>(k: &KernelBackend<D>, seed: u64, rep: &mut Report) {
    let cpu = CpuBackend::new(Some(1));
    let n_tok = 11usize; // per-token buffers; the chunk covers rows row0..row0+rows
    let row0 = 3usize;
    // V: a single column, fewer columns than threads, ragged, several columns per thread, and
    // GPT-2's vocabulary (the real block/stride arithmetic at full width, few rows).
    let cases = [(5usize, 1usize, 1.0f32), (4, 37, 0.7), (6, 300, 1.0), (5, 1000, 1.3), (3, 50257, 1.0)];
    for (case, &(rows, v, temp)) in cases.iter().enumerate() {
        let shape = format!("rows={rows} V={v} temp={temp}");
        rep.case("logprob_fwd", &shape, |rep| {
            let mut rng = Rng::new(case_seed(seed, 300 + case as u64));
            let ch = LogprobChunk { row0, rows, v, inv_temperature: 1.0 / temp };
            // The logits buffer is longer than rows·V (a chunk workspace with a short last chunk).
            let logits = randn(&mut rng, rows * v + 7, 3.0);
            let mut targets: Vec<u32> = (0..n_tok).map(|_| rng.below(v) as u32).collect();
            targets[row0 + 1] = v as u32; // out of range: NaN log-prob, NaN gradient row
            let mut dlogp = randn(&mut rng, n_tok, 1.0);
            let mut dent = randn(&mut rng, n_tok, 1.0);
            if rows > 3 {
                (dlogp[row0 + 2], dent[row0 + 2]) = (0.0, 0.0); // zero upstream: a zero row
            }
            let sentinel = vec![-42.0f32; n_tok];

            // Oracle.
            let (mut lp, mut ent) = (sentinel.clone(), sentinel.clone());
            cpu.logprob_entropy_forward(&logits, &targets, &mut lp, &mut ent, ch);
            let mut dlog = logits.clone();
            cpu.logprob_entropy_backward(&mut dlog, &targets, &dlogp, &dent, ch);

            // Device.
            let (mut d_lp, mut d_ent, mut d_logits, d_t) =
                (k.upload(&sentinel), k.upload(&sentinel), k.upload(&logits), k.upload_ids(&targets));
            k.logprob_entropy_forward(&d_logits, &d_t, &mut d_lp, &mut d_ent, ch);
            let (k_lp, k_ent) = (k.download(&d_lp), k.download(&d_ent));
            let (d_gl, d_gh) = (k.upload(&dlogp), k.upload(&dent));
            k.logprob_entropy_backward(&mut d_logits, &d_t, &d_gl, &d_gh, ch);
            let k_dlog = k.download(&d_logits);

            // Tolerances. Both sides sum V exponentials in f32 in different orders (the oracle
            // in 16 lanes with a polynomial exp, the kernel online per thread with expf,
            // rescaled): ln s and u/s carry a relative error of a few·V^½·2⁻²⁴ (blocked sums
            // of ≤ 3200 terms per lane at V = 50257), at most a few·1e-6, on values of size
            // ln V ≲ 11 → 2e-5 absolute (+2e-6 relative) for logp and H. Rows outside the
            // chunk keep their sentinel exactly (compared as part of the vector: the oracle
            // leaves them too), and the out-of-range target is NaN on both sides.
            let tol = Tol::Each { tol: 2e-6, floor: 0.0, abs: 2e-5 };
            rep.cmp("logprob_fwd/logp", &shape, &k_lp, &lp, tol, "2e-5 abs + 2e-6 rel per value");
            rep.cmp("logprob_fwd/entropy", &shape, &k_ent, &ent, tol, "2e-5 abs + 2e-6 rel per value");
            let outside: Vec<f32> = (0..row0).chain(row0 + rows..n_tok).flat_map(|i| [k_lp[i], k_ent[i]]).collect();
            let want_out = vec![-42.0f32; outside.len()];
            rep.cmp("logprob_fwd/outside", &shape, &outside, &want_out, Tol::Exact, "rows outside the chunk untouched");

            // d/dlogits: each entry is p_j times O(1) factors whose error is that of logp:
            // 1e-5 of the row's scale (floor 1e-3), row by row; the bad-target row is NaN.
            for r in (0..rows).filter(|&r| r != 1) {
                let (got, want) = (&k_dlog[r * v..(r + 1) * v], &dlog[r * v..(r + 1) * v]);
                let tol = Tol::Scale { tol: 1e-5, floor: 1e-3 };
                rep.cmp("logprob_bwd/dlogits", &shape, got, want, tol, &format!("of the row's scale; worst row {r}"));
            }
            let nan_row = k_dlog[v..2 * v].iter().all(|x| x.is_nan());
            rep.check("logprob_bwd/bad_target", &shape, nan_row, "target ≥ V gives a NaN gradient row");
            rep.cmp(
                "logprob_bwd/past_chunk",
                &shape,
                &k_dlog[rows * v..],
                &logits[rows * v..],
                Tol::Exact,
                "values past rows·V untouched",
            );
        });
    }
}

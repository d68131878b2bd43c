//! Parity cases of the GPT-2 layer ops on a kernel device: causal attention forward/backward and KV-cache attention.

use super::{case_seed, nans, nans_bf16, randn, rounded, upload_bf16, Report, Tol, BF16_OUT};
use crate::backend::cpu::CpuBackend;
use crate::backend::device::Device;
use crate::backend::kernel::KernelBackend;
use crate::backend::prelude::*;
use crate::backend::{AttentionShape, CachedShape, KvBufs};
use crate::util::rng::Rng;

/// Every case of this family.
pub(super) fn cases<D: Device>(k: &KernelBackend<D>, seed: u64, rep: &mut Report) {
    causal_cases(k, seed, rep);
    cached_cases(k, seed, rep);
}

// Tolerances (all ops). The kernels do the oracle's arithmetic in f32 in another order: an
// online softmax (running max, rescaled sums) instead of two passes, device/libm `expf` instead
// of the CPU's polynomial `exp` (both within ~2 ulp), and dot products of hs terms summed in
// another order. Each output is a sum of at most T terms bounded by the tensor's scale, so the
// rounding error is ≲ (hs + T)·2⁻²⁴ ≈ 1e-5 of the scale in the worst case and ~1e-6 typically.
// In the backward, dS = P∘(dP − D) subtracts two O(|dout||v|) values, so dq/dk carry that
// cancellation error too: 3e-5 of the scale. An indexing, masking or scaling mistake (a key past
// the diagonal, a wrong head, a missing 1/√hs) moves values by ≥ 1e-2 of the scale.
const FWD: Tol = Tol::Scale { tol: 1e-5, floor: 1e-3 };
const BWD: Tol = Tol::Scale { tol: 3e-5, floor: 1e-3 };

fn causal_cases<D: Device>(k: &KernelBackend<D>, seed: u64, rep: &mut Report) {
    let cpu = CpuBackend::new(Some(1));
    // (B, T, NH, C): ragged T and head counts; T = 33 crosses the 32-key tile and the 8-row
    // block; in T = 70 (three tiles) most rows' running max grows in a later tile, which
    // exercises the online-softmax rescaling; hs = 40 is not a multiple of 32 (lanes own 2 or 1 channels); hs = 128 is the
    // largest head the kernels take (4 channels per lane, the most shared memory).
    let shapes = [(2usize, 7usize, 3usize, 48usize), (1, 33, 2, 32), (1, 70, 2, 32), (2, 5, 2, 80), (1, 10, 1, 128)];
    for (case, &(b, t, nh, c)) in shapes.iter().enumerate() {
        let shape = format!("B={b} T={t} NH={nh} C={c} (hs {})", c / nh);
        rep.case("attention_forward", &shape, |rep| {
            let mut rng = Rng::new(case_seed(seed, 1300 + case as u64));
            // std 1.5: scores q·k/√hs of std ~2, so softmax rows range from flat to peaked.
            let qkv = randn(&mut rng, 3 * b * t * c, 1.5);
            let dout = randn(&mut rng, b * t * c, 1.0);

            let (mut out, mut lse) = (vec![0.0f32; b * t * c], vec![0.0f32; b * nh * t]);
            cpu.attention_forward(&mut out, &mut lse, &qkv, AttentionShape { b, t, nh, c });
            let mut dqkv = vec![0.0f32; 3 * b * t * c];
            cpu.attention_backward(&mut dqkv, &dout, &qkv, &out, &lse, AttentionShape { b, t, nh, c });

            // Outputs start as NaN: every value must be written.
            let d_qkv = k.upload(&qkv);
            let (mut d_out, mut d_lse) = (k.upload(&nans(b * t * c)), k.upload(&nans(b * nh * t)));
            k.attention_forward(&mut d_out, &mut d_lse, &d_qkv, AttentionShape { b, t, nh, c });
            rep.cmp("attention_forward/out", &shape, &k.download(&d_out), &out, FWD, "of the scale");
            rep.cmp("attention_forward/lse", &shape, &k.download(&d_lse), &lse, FWD, "of the scale");

            // The backward from the oracle's forward results, so its row measures the backward
            // alone; dqkv starts as NaN (the op overwrites it).
            let (d_dout, d_fo, d_fl) = (k.upload(&dout), k.upload(&out), k.upload(&lse));
            let mut d_dqkv = k.upload(&nans(3 * b * t * c));
            k.attention_backward(&mut d_dqkv, &d_dout, &d_qkv, &d_fo, &d_fl, AttentionShape { b, t, nh, c });
            let got = k.download(&d_dqkv);
            // Per third, so a failure names dq, dk or dv.
            let third = |v: &[f32], part: usize| -> Vec<f32> {
                v.chunks_exact(3 * c).flat_map(|row| row[part * c..(part + 1) * c].iter().copied()).collect()
            };
            for (part, name) in ["dq", "dk", "dv"].iter().enumerate() {
                let op = format!("attention_backward/{name}");
                rep.cmp(&op, &shape, &third(&got, part), &third(&dqkv, part), BWD, "of the scale; overwrites NaN");
            }
        });
    }
}

fn cached_cases<D: Device>(k: &KernelBackend<D>, seed: u64, rep: &mut Report) {
    let cpu = CpuBackend::new(Some(1));
    // (B, T_max, NH, C) and a sequence of calls, each a list of (seq, pos) rows: a ragged
    // prefill of two sequences in one call (rows interleaved), then decode steps at different
    // positions per sequence (one sequence skipping a step); the second case prefills past
    // the 32-key tile and decodes at position 36.
    type Call = Vec<(u32, u32)>;
    let prefill = |s: u32, n: u32| (0..n).map(move |p| (s, p));
    let case1: Vec<Call> =
        vec![prefill(2, 6).chain(prefill(0, 3)).collect(), vec![(0, 3), (2, 6)], vec![(2, 7), (1, 0), (0, 4)]];
    let case2: Vec<Call> = vec![prefill(1, 36).collect(), vec![(1, 36), (0, 0)]];
    let cases = [((3usize, 12usize, 2usize, 32usize), case1), ((2, 40, 3, 48), case2)];
    for (case, ((b, t_max, nh, c), calls)) in cases.into_iter().enumerate() {
        let shape = format!("B={b} T_max={t_max} NH={nh} C={c} ({} calls)", calls.len());
        rep.case("attention_cached", &shape, |rep| {
            let mut rng = Rng::new(case_seed(seed, 1400 + case as u64));
            // Stale, finite cache contents: a kernel that read slots past pos would differ.
            let stale = randn(&mut rng, b * t_max * c, 1.0);
            let (mut kc, mut vc) = (stale.clone(), randn(&mut rng, b * t_max * c, 1.0));
            let (mut d_kc, mut d_vc) = (k.upload(&kc), k.upload(&vc));
            for (i, rows) in calls.iter().enumerate() {
                let r = rows.len();
                let qkv = randn(&mut rng, r * 3 * c, 1.5);
                let seq: Vec<u32> = rows.iter().map(|x| x.0).collect();
                let pos: Vec<u32> = rows.iter().map(|x| x.1).collect();
                let mut out = vec![0.0f32; r * c];
                cpu.attention_cached(
                    &mut out,
                    KvBufs { k: &mut kc, v: &mut vc },
                    &qkv,
                    &seq,
                    &pos,
                    CachedShape { rows: r, t_max, nh, c },
                );

                let (d_qkv, d_seq, d_pos) = (k.upload(&qkv), k.upload_ids(&seq), k.upload_ids(&pos));
                let mut d_out = k.upload(&nans(r * c));
                k.attention_cached(
                    &mut d_out,
                    KvBufs { k: &mut d_kc, v: &mut d_vc },
                    &d_qkv,
                    &d_seq,
                    &d_pos,
                    CachedShape { rows: r, t_max, nh, c },
                );
                let note = format!("of the scale; worst of {} calls (R = {r} in call {i})", calls.len());
                rep.cmp("attention_cached/out", &shape, &k.download(&d_out), &out, FWD, &note);
                // The store phase is a copy: the caches must match bit for bit.
                rep.cmp("attention_cached/k_cache", &shape, &k.download(&d_kc), &kc, Tol::Bits, "copied k");
                rep.cmp("attention_cached/v_cache", &shape, &k.download(&d_vc), &vc, Tol::Bits, "copied v");
            }
        });
    }
}

/// The bf16 entry points: q/k/v, the output, dqkv and the caches stored as bf16; lse, the
/// incoming gradient and every score, probability and sum in f32. The oracle runs on the same
/// bf16 values (the backward on the rounded forward output, which is what the device reads)
/// and its outputs are rounded: one bf16 ulp of the scale ([`BF16_OUT`]) plus the f32 cases'
/// bounds; lse is f32 and keeps the f32 bound.
pub(super) fn bf16_cases<D: Device>(k: &KernelBackend<D>, seed: u64, rep: &mut Report) {
    let cpu = CpuBackend::new(Some(1));
    let out_tol = Tol::Scale { tol: 7.9e-3 + 3e-5, floor: 1e-3 };
    for (case, &(b, t, nh, c)) in [(2usize, 7usize, 3usize, 48usize), (1, 70, 2, 32)].iter().enumerate() {
        let shape = format!("B={b} T={t} NH={nh} C={c}");
        let s = AttentionShape { b, t, nh, c };
        rep.case("attention_forward_bf16", &shape, |rep| {
            let mut rng = Rng::new(case_seed(seed, 2900 + case as u64));
            let (qkv, d_qkv) = upload_bf16(k, &randn(&mut rng, 3 * b * t * c, 1.5));
            let dout = randn(&mut rng, b * t * c, 1.0);
            let (mut out, mut lse) = (vec![0.0f32; b * t * c], vec![0.0f32; b * nh * t]);
            cpu.attention_forward(&mut out, &mut lse, &qkv, s);
            let (mut d_out, mut d_lse) = (nans_bf16(k, b * t * c), k.upload(&nans(b * nh * t)));
            k.attention_forward(&mut d_out, &mut d_lse, &d_qkv, s);
            rep.cmp(
                "attention_forward_bf16/out",
                &shape,
                &k.download(&d_out),
                &rounded(&out),
                BF16_OUT,
                "one bf16 ulp",
            );
            rep.cmp("attention_forward_bf16/lse", &shape, &k.download(&d_lse), &lse, FWD, "f32, of the scale");

            let (out16, d_fo) = upload_bf16(k, &out);
            let mut dqkv = vec![0.0f32; 3 * b * t * c];
            cpu.attention_backward(&mut dqkv, &dout, &qkv, &out16, &lse, s);
            let (d_dout, d_fl) = (k.upload(&dout), k.upload(&lse));
            let mut d_dqkv = nans_bf16(k, 3 * b * t * c);
            k.attention_backward(&mut d_dqkv, &d_dout, &d_qkv, &d_fo, &d_fl, s);
            let got = k.download(&d_dqkv);
            rep.cmp("attention_backward_bf16/dqkv", &shape, &got, &rounded(&dqkv), out_tol, "one bf16 ulp + f32");
        });
    }
    let (b, t_max, nh, c) = (2usize, 40usize, 2usize, 32usize);
    let shape = format!("B={b} T_max={t_max} NH={nh} C={c} (prefill 35 + decode)");
    rep.case("attention_cached_bf16", &shape, |rep| {
        let mut rng = Rng::new(case_seed(seed, 2950));
        let (mut kc, mut d_kc) = upload_bf16(k, &randn(&mut rng, b * t_max * c, 1.0));
        let (mut vc, mut d_vc) = upload_bf16(k, &randn(&mut rng, b * t_max * c, 1.0));
        let calls: [Vec<(u32, u32)>; 2] = [(0..35).map(|p| (1, p)).chain([(0, 0)]).collect(), vec![(1, 35), (0, 1)]];
        for rows in &calls {
            let r = rows.len();
            let (qkv, d_qkv) = upload_bf16(k, &randn(&mut rng, r * 3 * c, 1.5));
            let seq: Vec<u32> = rows.iter().map(|x| x.0).collect();
            let pos: Vec<u32> = rows.iter().map(|x| x.1).collect();
            let cs = CachedShape { rows: r, t_max, nh, c };
            let mut out = vec![0.0f32; r * c];
            cpu.attention_cached(&mut out, KvBufs { k: &mut kc, v: &mut vc }, &qkv, &seq, &pos, cs);
            let (d_seq, d_pos) = (k.upload_ids(&seq), k.upload_ids(&pos));
            let mut d_out = nans_bf16(k, r * c);
            k.attention_cached(&mut d_out, KvBufs { k: &mut d_kc, v: &mut d_vc }, &d_qkv, &d_seq, &d_pos, cs);
            rep.cmp("attention_cached_bf16/out", &shape, &k.download(&d_out), &rounded(&out), out_tol, "one bf16 ulp");
            rep.cmp("attention_cached_bf16/k_cache", &shape, &k.download(&d_kc), &kc, Tol::Bits, "copied k");
            rep.cmp("attention_cached_bf16/v_cache", &shape, &k.download(&d_vc), &vc, Tol::Bits, "copied v");
        }
    });
}

//! Parity of the fused kernels (`kernels/*.cu`, launched through `backend::kernels`) with their
//! CPU oracles, on ragged shapes (sizes that are not multiples of 32, padded masks).
//!
//! Each test body is generic over a [`ParityDevice`] (a [`Launcher`] that can also move f32 /
//! i32 data in and out), so the same bodies run on the emulated device here and on a real GPU
//! once the CUDA backend implements the trait. Tolerances are stated and justified at each
//! comparison; the observed errors are printed (`cargo test -- --nocapture`).

mod common;

use common::rel_err;
use gepa_dapo_grn::backend::cpu::CpuBackend;
use gepa_dapo_grn::backend::emu::{DevPtr, EmuDevice};
use gepa_dapo_grn::backend::kernels::{advantage, grn, logprob, policy_loss, Launcher};
use gepa_dapo_grn::backend::{
    policy_metric as pm, Backend, IsLevel, LogprobChunk, LossType, PolicyLossInputs, PolicyLossParams,
};
use gepa_dapo_grn::model::grn::{grn_backward, grn_forward};
use gepa_dapo_grn::rl::advantage::{group_advantages, AdvantageConfig, AdvantageScaling};
use gepa_dapo_grn::util::rng::Rng;

/// A device the parity bodies can run on: it launches kernels and holds 32-bit buffers.
trait ParityDevice: Launcher {
    /// A device buffer of 32-bit words.
    type Buf;
    /// A buffer holding the bits of `words`.
    fn upload(&self, words: &[u32]) -> Self::Buf;
    /// The buffer's device address.
    fn ptr(&self, buf: &Self::Buf) -> DevPtr;
    /// The buffer's words.
    fn download(&self, buf: &Self::Buf) -> Vec<u32>;

    fn up_f32(&self, v: &[f32]) -> Self::Buf {
        self.upload(&v.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
    }
    fn up_u32(&self, v: &[u32]) -> Self::Buf {
        self.upload(v)
    }
    fn up_i32(&self, v: &[i32]) -> Self::Buf {
        self.upload(&v.iter().map(|&x| x as u32).collect::<Vec<_>>())
    }
    fn down_f32(&self, buf: &Self::Buf) -> Vec<f32> {
        self.download(buf).into_iter().map(f32::from_bits).collect()
    }
}

/// Host memory playing device memory for the emulator: a leaked box, so the kernel may write
/// through the address while the test holds only this handle.
struct EmuBuf {
    ptr: *mut u32,
    len: usize,
}

impl Drop for EmuBuf {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` come from `Box::into_raw` of a `Box<[u32]>` of `len` words, freed
        // only here.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.ptr, self.len)) });
    }
}

impl ParityDevice for EmuDevice {
    type Buf = EmuBuf;
    fn upload(&self, words: &[u32]) -> EmuBuf {
        // At least one word, so every buffer has a distinct valid address.
        let mut v = words.to_vec();
        if v.is_empty() {
            v.push(0);
        }
        let len = v.len();
        EmuBuf { ptr: Box::into_raw(v.into_boxed_slice()) as *mut u32, len }
    }
    fn ptr(&self, buf: &EmuBuf) -> DevPtr {
        DevPtr(buf.ptr as u64)
    }
    fn download(&self, buf: &EmuBuf) -> Vec<u32> {
        // SAFETY: the allocation is live and no launch is running (launches are synchronous).
        unsafe { std::slice::from_raw_parts(buf.ptr, buf.len) }.to_vec()
    }
}

fn randn(rng: &mut Rng, n: usize, std: f32) -> Vec<f32> {
    common::randn(rng, n, std)
}

/// max |a − b| over elements, for reporting.
fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
}

// ---- GRN -------------------------------------------------------------------------------------

/// A mask (B,T) with ragged real lengths; sequence `all_pad` (if any) is all padding.
fn ragged_mask(rng: &mut Rng, b: usize, t: usize, all_pad: Option<usize>) -> Vec<f32> {
    let mut m = vec![0.0f32; b * t];
    for bi in 0..b {
        if Some(bi) == all_pad {
            continue;
        }
        let len = 1 + rng.below(t);
        // Left-padded for odd sequences, right-padded for even ones.
        for ti in 0..len {
            let pos = if bi % 2 == 1 { t - 1 - ti } else { ti };
            m[bi * t + pos] = 1.0;
        }
    }
    m
}

fn grn_parity<D: ParityDevice>(dev: &D) {
    // (B, T, C): C not a multiple of 32, C above the 256-thread block (threads stride), T odd.
    // The last case has eps = 0 and an all-zero sequence 0: μ + eps = 0 there, so N = 0.
    let cases = [(3usize, 7usize, 45usize, 1e-6f32), (2, 33, 300, 1e-6), (4, 5, 1, 1e-6), (2, 4, 33, 0.0)];
    for (case, &(b, t, c, eps)) in cases.iter().enumerate() {
        let mut rng = Rng::new(100 + case as u64);
        let mut x = randn(&mut rng, b * t * c, 1.0);
        if eps == 0.0 {
            x[..t * c].fill(0.0);
        }
        let mask = ragged_mask(&mut rng, b, t, (b > 2).then_some(2));
        let gamma = randn(&mut rng, c, 0.5);
        let beta = randn(&mut rng, c, 0.5);
        let dy = randn(&mut rng, b * t * c, 1.0);
        let dgamma0 = randn(&mut rng, c, 1.0);
        let dbeta0 = randn(&mut rng, c, 1.0);

        // Oracle.
        let (mut out, mut g, mut mean, mut n) =
            (vec![0.0; b * t * c], vec![0.0; b * c], vec![0.0; b], vec![0.0; b * c]);
        grn_forward(&mut out, &mut g, &mut mean, &mut n, &x, &mask, &gamma, &beta, b, t, c, eps);
        let (mut dx, mut dgamma, mut dbeta) = (vec![0.0; b * t * c], dgamma0.clone(), dbeta0.clone());
        grn_backward(&mut dx, &mut dgamma, &mut dbeta, &dy, &x, &mask, &gamma, &g, &mean, &n, b, t, c, eps);

        // Device.
        let nan = |k: usize| dev.up_f32(&vec![f32::NAN; k]);
        let (d_out, d_g, d_mean, d_n) = (nan(b * t * c), nan(b * c), nan(b), nan(b * c));
        let (d_x, d_mask, d_gamma, d_beta) = (dev.up_f32(&x), dev.up_f32(&mask), dev.up_f32(&gamma), dev.up_f32(&beta));
        let fwd = grn::GrnForward {
            out: dev.ptr(&d_out),
            g: dev.ptr(&d_g),
            mean: dev.ptr(&d_mean),
            n: dev.ptr(&d_n),
            x: dev.ptr(&d_x),
            mask: dev.ptr(&d_mask),
            gamma: dev.ptr(&d_gamma),
            beta: dev.ptr(&d_beta),
        };
        // SAFETY: every buffer holds the extent its field names for (b, t, c); outputs are
        // separate allocations.
        unsafe { grn::grn_forward(dev, &fwd, b, t, c, eps) }.unwrap();
        let (k_out, k_g, k_mean, k_n) =
            (dev.down_f32(&d_out), dev.down_f32(&d_g), dev.down_f32(&d_mean), dev.down_f32(&d_n));

        let (d_dx, d_dgamma, d_dbeta, d_part, d_dy) =
            (nan(b * t * c), dev.up_f32(&dgamma0), dev.up_f32(&dbeta0), nan(2 * b * c), dev.up_f32(&dy));
        // The backward reads the oracle's statistics, so it is checked on its own.
        let (o_g, o_mean, o_n) = (dev.up_f32(&g), dev.up_f32(&mean), dev.up_f32(&n));
        let bwd = grn::GrnBackward {
            dx: dev.ptr(&d_dx),
            dgamma: dev.ptr(&d_dgamma),
            dbeta: dev.ptr(&d_dbeta),
            partial: dev.ptr(&d_part),
            dy: dev.ptr(&d_dy),
            x: dev.ptr(&d_x),
            mask: dev.ptr(&d_mask),
            gamma: dev.ptr(&d_gamma),
            g: dev.ptr(&o_g),
            mean: dev.ptr(&o_mean),
            n: dev.ptr(&o_n),
        };
        // SAFETY: as above; `partial` holds 2·B·C values.
        unsafe { grn::grn_backward(dev, &bwd, b, t, c, eps) }.unwrap();
        let (k_dx, k_dgamma, k_dbeta) = (dev.down_f32(&d_dx), dev.down_f32(&d_dgamma), dev.down_f32(&d_dbeta));

        // Tolerances. The kernel sums T squares (and T products dy·x) in f32 in a different
        // order than the oracle's f64 sums: each sum carries a relative error of about
        // T·2⁻²⁴ ≈ 2e-6 at T = 33, a few ulps more through sqrt, the mean over C and the
        // divisions. 2e-5 of the tensor's scale leaves ~10× headroom and still catches any
        // indexing or masking error (those are O(1) relative). The backward's coefficient
        // subtracts two O(1) terms (γS/D − k/(C·D²)), so dx gets 1e-4 of its scale; the
        // parameter gradients sum B per-sequence partials of T-term f32 sums: 1e-5.
        let errs = [
            ("out", rel_err(&k_out, &out, 1.0), 2e-5),
            ("g", rel_err(&k_g, &g, 1.0), 2e-5),
            ("mean", rel_err(&k_mean, &mean, 1.0), 2e-5),
            ("n", rel_err(&k_n, &n, 1.0), 2e-5),
            ("dx", rel_err(&k_dx, &dx, 1.0), 1e-4),
            ("dgamma", rel_err(&k_dgamma, &dgamma, 1.0), 1e-5),
            ("dbeta", rel_err(&k_dbeta, &dbeta, 1.0), 1e-5),
        ];
        for (name, err, tol) in errs {
            println!("grn (B={b}, T={t}, C={c}) {name}: rel err {err:.2e} (tol {tol:.0e})");
            assert!(err <= tol, "grn (B={b}, T={t}, C={c}) {name}: rel err {err} > {tol}");
        }
        // Padding positions pass x (forward) and dy (backward) through exactly.
        for (i, &m) in mask.iter().enumerate() {
            if m == 0.0 {
                let r = i * c..(i + 1) * c;
                assert_eq!(k_out[r.clone()], x[r.clone()], "padding row {i} of out");
                assert_eq!(k_dx[r.clone()], dy[r], "padding row {i} of dx");
            }
        }
        println!("grn (B={b}, T={t}, C={c}) max abs: out {:.2e} dx {:.2e}", max_abs(&k_out, &out), max_abs(&k_dx, &dx));

        // γ = β = 0 is the identity bit for bit, −0.0 included.
        let mut xz = x.clone();
        xz[0] = -0.0;
        let last = xz.len() - 1;
        xz[c.min(last)] = -0.0;
        let zeros = dev.up_f32(&vec![0.0; c]);
        let d_xz = dev.up_f32(&xz);
        let fwd0 = grn::GrnForward { x: dev.ptr(&d_xz), gamma: dev.ptr(&zeros), beta: dev.ptr(&zeros), ..fwd };
        // SAFETY: as the first forward.
        unsafe { grn::grn_forward(dev, &fwd0, b, t, c, eps) }.unwrap();
        let ident: Vec<u32> = dev.download(&d_out);
        let want: Vec<u32> = xz.iter().map(|v| v.to_bits()).collect();
        assert_eq!(ident, want, "zero-init GRN is not the bitwise identity (B={b}, T={t}, C={c})");
    }
}

#[test]
fn grn_matches_the_oracle_emulated() {
    grn_parity(&EmuDevice::new());
}

// ---- group advantages ------------------------------------------------------------------------

fn advantage_parity<D: ParityDevice>(dev: &D) {
    let mut rng = Rng::new(7);
    // Ragged groups: singletons, a group wider than a warp, sizes that are not multiples of 32.
    let sizes = [1usize, 5, 3, 40, 8, 1, 16, 33, 2, 7, 12, 4];
    let mut rewards: Vec<f32> = Vec::new();
    for (gi, &s) in sizes.iter().enumerate() {
        for _ in 0..s {
            rewards.push(match gi % 4 {
                0 => rng.normal(),
                1 => (rng.below(2)) as f32, // binary rewards
                2 => 0.75,                  // all equal: advantages exactly 0
                _ => 3.0 + 0.1 * rng.normal(),
            });
        }
    }
    let n = rewards.len();
    let mut offsets = vec![0i32];
    for &s in &sizes {
        offsets.push(offsets.last().unwrap() + s as i32);
    }
    let r64: Vec<f64> = rewards.iter().map(|&r| r as f64).collect();
    let (d_r, d_off) = (dev.up_f32(&rewards), dev.up_i32(&offsets));
    let mut worst = 0.0f32;
    for scaling in [AdvantageScaling::Group, AdvantageScaling::Batch, AdvantageScaling::None] {
        for eps in [1e-4f32, 0.0] {
            for clip in [None, Some(1.5f32)] {
                let cfg = AdvantageConfig { scaling, eps: eps as f64, clip: clip.map(|c| c as f64) };
                let want: Vec<f32> = group_advantages(&r64, &sizes, &cfg).unwrap().iter().map(|&a| a as f32).collect();
                let d_out = dev.up_f32(&vec![f32::NAN; n]);
                // SAFETY: out and rewards hold N values, offsets G+1 increasing from 0 to N.
                unsafe {
                    advantage::group_advantage(
                        dev,
                        dev.ptr(&d_out),
                        dev.ptr(&d_r),
                        dev.ptr(&d_off),
                        sizes.len(),
                        n,
                        scaling,
                        eps,
                        clip,
                    )
                }
                .unwrap();
                let got = dev.down_f32(&d_out);
                // f32 means and sums of squares over at most 146 values (the oracle's are
                // f64): relative error ~n·2⁻²⁴ ≈ 1e-5 on the std, carried into A = c/std,
                // where |A| ≤ ~6 for these groups. 2e-5·max(|A|,1) + 1e-5 absolute.
                for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                    let err = (g - w).abs();
                    worst = worst.max(err);
                    assert!(err <= 2e-5 * w.abs().max(1.0) + 1e-5, "{cfg:?} reward {i}: {g} vs {w}");
                    // Equal-reward groups and singletons give exactly 0 on both sides.
                    if w == 0.0 {
                        assert_eq!(g, 0.0, "{cfg:?} reward {i}");
                    }
                }
            }
        }
    }
    println!("group_advantage: max abs err {worst:.2e} over 12 configurations");
}

#[test]
fn group_advantage_matches_the_oracle_emulated() {
    advantage_parity(&EmuDevice::new());
}

// ---- log-softmax gather + entropy ------------------------------------------------------------

fn logprob_parity<D: ParityDevice>(dev: &D) {
    let cpu = CpuBackend::new(Some(1));
    let n_tok = 11usize; // per-token buffers; the chunk covers rows 3..3+rows
    let row0 = 3usize;
    // V: a single column, fewer columns than threads, ragged, and several columns per thread.
    for (case, &(rows, v, temp)) in
        [(5usize, 1usize, 1.0f32), (4, 37, 0.7), (6, 300, 1.0), (5, 1000, 1.3)].iter().enumerate()
    {
        let mut rng = Rng::new(300 + case as u64);
        let ch = LogprobChunk { row0, rows, v, inv_temperature: 1.0 / temp };
        // The logits buffer is longer than rows·V (a chunk workspace with a short last chunk).
        let logits = randn(&mut rng, rows * v + 7, 3.0);
        let mut targets: Vec<u32> = (0..n_tok).map(|_| rng.below(v) as u32).collect();
        targets[row0 + 1] = v as u32; // out of range: NaN log-prob, NaN gradient row
        let dlogp = randn(&mut rng, n_tok, 1.0);
        let mut dent = randn(&mut rng, n_tok, 1.0);
        let mut dlogp = dlogp;
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
        let (d_lp, d_ent, d_logits, d_t) =
            (dev.up_f32(&sentinel), dev.up_f32(&sentinel), dev.up_f32(&logits), dev.up_u32(&targets));
        // SAFETY: logits holds ≥ rows·V values, the per-token buffers N ≥ row0 + rows.
        unsafe {
            logprob::logprob_entropy_forward(
                dev,
                dev.ptr(&d_lp),
                dev.ptr(&d_ent),
                dev.ptr(&d_logits),
                dev.ptr(&d_t),
                ch,
            )
        }
        .unwrap();
        let (k_lp, k_ent) = (dev.down_f32(&d_lp), dev.down_f32(&d_ent));
        let (d_gl, d_gh) = (dev.up_f32(&dlogp), dev.up_f32(&dent));
        // SAFETY: as above; the logits are overwritten in place.
        unsafe {
            logprob::logprob_entropy_backward(
                dev,
                dev.ptr(&d_logits),
                dev.ptr(&d_t),
                dev.ptr(&d_gl),
                dev.ptr(&d_gh),
                ch,
            )
        }
        .unwrap();
        let k_dlog = dev.down_f32(&d_logits);

        // Rows outside the chunk are untouched, the out-of-range target gives NaN on both sides.
        for i in (0..row0).chain(row0 + rows..n_tok) {
            assert_eq!((k_lp[i], k_ent[i]), (-42.0, -42.0), "row {i} outside the chunk was written");
        }
        assert!(k_lp[row0 + 1].is_nan() && lp[row0 + 1].is_nan());
        assert!(k_dlog[v..2 * v].iter().all(|x| x.is_nan()), "target ≥ V must give a NaN gradient row");
        assert_eq!(k_dlog[rows * v..], logits[rows * v..], "values past rows·V were written");
        // Tolerances. Both sides sum V exponentials in f32 in different orders (the oracle in
        // 16 lanes with a polynomial exp, the kernel online per thread with expf, rescaled):
        // ln s and u/s carry a relative error of a few·V^½·2⁻²⁴ at most a few·1e-6, on values of
        // size ln V ≲ 10 → 2e-5 absolute (+2e-6 relative) for logp and H. d/dlogits: each
        // entry is p_j times O(1) factors whose error is that of logp: 1e-5 of the row scale.
        let (mut e_lp, mut e_h) = (0.0f32, 0.0f32);
        for i in row0..row0 + rows {
            if i == row0 + 1 {
                // entropy is still defined for the row with the bad target
                e_h = e_h.max((k_ent[i] - ent[i]).abs());
                continue;
            }
            e_lp = e_lp.max((k_lp[i] - lp[i]).abs());
            e_h = e_h.max((k_ent[i] - ent[i]).abs());
            assert!(
                (k_lp[i] - lp[i]).abs() <= 2e-5 + 2e-6 * lp[i].abs(),
                "V={v} logp row {i}: {} vs {}",
                k_lp[i],
                lp[i]
            );
            assert!(
                (k_ent[i] - ent[i]).abs() <= 2e-5 + 2e-6 * ent[i].abs(),
                "V={v} H row {i}: {} vs {}",
                k_ent[i],
                ent[i]
            );
        }
        let mut e_dx = 0.0f32;
        for r in (0..rows).filter(|&r| r != 1) {
            let (got, want) = (&k_dlog[r * v..(r + 1) * v], &dlog[r * v..(r + 1) * v]);
            let err = rel_err(got, want, 1e-3);
            e_dx = e_dx.max(err);
            assert!(err <= 1e-5, "V={v} d/dlogits row {r}: rel err {err}");
        }
        println!("logprob (rows={rows}, V={v}, T={temp}): logp abs err {e_lp:.2e}, H abs err {e_h:.2e}, dlogits rel err {e_dx:.2e}");
    }
}

#[test]
fn logprob_entropy_matches_the_oracle_emulated() {
    logprob_parity(&EmuDevice::new());
}

// ---- clipped-ratio policy loss ---------------------------------------------------------------

fn policy_loss_parity<D: ParityDevice>(dev: &D) {
    let cpu = CpuBackend::new(Some(1));
    // S sequences of L tokens: L not a multiple of 32 and above one 32-thread stride.
    let (s, l) = (6usize, 45usize);
    let mut rng = Rng::new(500);
    let mut mask = vec![0.0f32; s * l];
    for i in 0..s {
        // Ragged completion lengths; sequence 3 is entirely padding, sequence 4 has 0.5 weights.
        let len = if i == 3 { 0 } else { 1 + rng.below(l) };
        for t in 0..len {
            mask[i * l + t] = if i == 4 && t % 3 == 0 { 0.5 } else { 1.0 };
        }
    }
    mask[5 * l + l - 1] = -1.0; // an invalid weight: counted in BAD_MASK, never read
    let logp_old: Vec<f32> = (0..s * l).map(|_| -2.0 + 0.5 * rng.normal()).collect();
    // log-ratios spread enough that both clip branches occur.
    let mut logp: Vec<f32> = logp_old.iter().map(|&o| o + 0.3 * rng.normal()).collect();
    let logp_ref: Vec<f32> = logp.iter().map(|&o| o + 0.2 * rng.normal()).collect();
    let entropy: Vec<f32> = (0..s * l).map(|_| 2.0 + rng.normal().abs()).collect();
    let advantages = vec![1.2f32, -0.7, 0.4, 0.9, -1.5, 0.3];
    // Padding may hold anything, NaN included: it must not reach the loss.
    for (lp, &m) in logp.iter_mut().zip(&mask) {
        if m == 0.0 {
            *lp = f32::NAN;
        }
    }
    let (d_lp, d_lpo, d_lpr) = (dev.up_f32(&logp), dev.up_f32(&logp_old), dev.up_f32(&logp_ref));
    let (d_adv, d_ent, d_mask) = (dev.up_f32(&advantages), dev.up_f32(&entropy), dev.up_f32(&mask));
    let (mut worst_g, mut worst_m) = (0.0f32, 0.0f32);
    // Both clip branches must actually occur somewhere, or the test would not check them.
    let (mut saw_low, mut saw_high) = (false, false);
    for loss_type in [LossType::Grpo, LossType::Dapo, LossType::DrGrpo] {
        for level in [IsLevel::Token, IsLevel::Sequence] {
            for (beta, with_ref) in [(0.0f32, false), (0.04, true), (0.04, false)] {
                let params = PolicyLossParams {
                    s,
                    l,
                    loss_type,
                    level,
                    eps_low: 0.2,
                    eps_high: 0.28,
                    beta,
                    entropy_coef: 0.01,
                    max_completion_length: l + 3,
                };
                let (mut dlp, mut dh, mut met) = (vec![0.0f32; s * l], vec![0.0f32; s * l], vec![0.0f32; pm::LEN]);
                let inputs = PolicyLossInputs::<CpuBackend> {
                    logp: &logp,
                    logp_old: &logp_old,
                    logp_ref: with_ref.then_some(&logp_ref),
                    advantages: &advantages,
                    entropy: &entropy,
                    mask: &mask,
                };
                cpu.policy_loss(&mut dlp, &mut dh, &mut met, inputs, params);

                let nan = |k: usize| dev.up_f32(&vec![f32::NAN; k]);
                let (k_dlp, k_dh, k_met, k_ws) =
                    (nan(s * l), nan(s * l), nan(pm::LEN), nan(policy_loss::WORKSPACE_PER_SEQ * s));
                let bufs = policy_loss::PolicyLossBufs {
                    dlogp: dev.ptr(&k_dlp),
                    dentropy: dev.ptr(&k_dh),
                    metrics: dev.ptr(&k_met),
                    workspace: dev.ptr(&k_ws),
                    logp: dev.ptr(&d_lp),
                    logp_old: dev.ptr(&d_lpo),
                    logp_ref: with_ref.then(|| dev.ptr(&d_lpr)),
                    advantages: dev.ptr(&d_adv),
                    entropy: dev.ptr(&d_ent),
                    mask: dev.ptr(&d_mask),
                };
                // SAFETY: every buffer holds the extent its field names for (S, L).
                unsafe { policy_loss::policy_loss(dev, &bufs, &params) }.unwrap();
                let (g_dlp, g_dh, g_met) = (dev.down_f32(&k_dlp), dev.down_f32(&k_dh), dev.down_f32(&k_met));
                let what = format!("{loss_type:?}/{level:?}/beta {beta}/ref {with_ref}");
                // Tolerances. Per-token gradients are a few f32 operations on the same inputs
                // (the oracle goes through f64, and the kernel scales by c_i last); the
                // sequence-level ratio and gradient add an L-term f32 sum: 1e-5 of the
                // tensor's scale. Metrics are f32 sums over ≤ 270 tokens in another order
                // than the oracle's f64 ones: 2e-5 relative (+1e-6 absolute, for the KL mean
                // and clip fractions of size ~1e-2); counts and min/max must agree exactly
                // (ratio min/max to 2 ulps: expf vs Rust's exp).
                let eg = rel_err(&g_dlp, &dlp, 1e-6);
                let eh = rel_err(&g_dh, &dh, 1e-6);
                assert!(eg <= 1e-5 && eh <= 1e-5, "{what}: dlogp rel err {eg}, dentropy rel err {eh}");
                worst_g = worst_g.max(eg).max(eh);
                saw_low |= met[pm::CLIP_FRAC_LOW] > 0.0;
                saw_high |= met[pm::CLIP_FRAC_HIGH] > 0.0;
                for k in 0..pm::LEN {
                    let (g, w) = (g_met[k], met[k]);
                    let tol = match k {
                        pm::MASK_SUM
                        | pm::BAD_LOGP
                        | pm::BAD_LOGP_OLD
                        | pm::BAD_LOGP_REF
                        | pm::BAD_ADVANTAGE
                        | pm::BAD_MASK
                        | pm::BAD_ENTROPY => 0.0,
                        pm::RATIO_MIN | pm::RATIO_MAX => 2.5e-7 * w.abs(),
                        _ => 2e-5 * w.abs() + 1e-6,
                    };
                    worst_m = worst_m.max((g - w).abs() / w.abs().max(1e-3));
                    assert!((g - w).abs() <= tol, "{what}: metric {k}: {g} vs {w}");
                }
                // Padding gradients are exactly zero.
                for (j, &m) in mask.iter().enumerate() {
                    if m <= 0.0 {
                        assert_eq!((g_dlp[j], g_dh[j]), (0.0, 0.0), "{what}: padding gradient at {j}");
                    }
                }
            }
        }
    }
    assert!(saw_low && saw_high, "the inputs never clipped (low {saw_low}, high {saw_high})");
    println!(
        "policy_loss: gradients max rel err {worst_g:.2e}, metrics max rel err {worst_m:.2e} over 18 configurations"
    );
}

#[test]
fn policy_loss_matches_the_oracle_emulated() {
    policy_loss_parity(&EmuDevice::new());
}

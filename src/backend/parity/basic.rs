//! Parity cases of the GPT-2 layer ops on a kernel device: embeddings, GELU, bias gradients,
//! AdamW, global norm, scale.
//!
//! Every family has a small ragged case (B=2, T=5, C=48, V=37 or N not a multiple of 32) and
//! one of more than [`k::MAX_BLOCKS`]·[`k::THREADS`] values, so the elementwise kernels' grid is
//! capped and their grid-stride loops run a second iteration.

use super::{case_seed, nans, randn, Report, Tol};
use crate::backend::cpu::CpuBackend;
use crate::backend::device::Device;
use crate::backend::kernel_backend::KernelBackend;
use crate::backend::kernels::basic as k;
use crate::backend::{AdamWStep, Backend};
use crate::util::rng::Rng;

/// Values that overflow one full grid (1024 blocks × 256 threads) by a ragged amount.
const BIG: usize = (k::MAX_BLOCKS * k::THREADS) as usize + 5_003;

/// Every case of this family.
pub(super) fn cases<D: Device>(kb: &KernelBackend<D>, seed: u64, rep: &mut Report) {
    encoder_cases(kb, seed, rep);
    gelu_cases(kb, seed, rep);
    bias_backward_cases(kb, seed, rep);
    adamw_cases(kb, seed, rep);
    global_norm_cases(kb, seed, rep);
    scale_cases(kb, seed, rep);
}

fn ids(rng: &mut Rng, n: usize, v: usize) -> Vec<u32> {
    (0..n).map(|_| rng.below(v) as u32).collect()
}

// ---- embeddings --------------------------------------------------------------------------------

fn encoder_cases<D: Device>(kb: &KernelBackend<D>, seed: u64, rep: &mut Report) {
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
            cpu.encoder_forward(&mut want, &tok, &wte, &wpe, b, t, c);
            let mut d_out = kb.upload(&nans(b * t * c));
            kb.encoder_forward(&mut d_out, &d_ids, &d_wte, &d_wpe, b, t, c);
            // One f32 addition of the same two values on both sides: bit-identical.
            rep.cmp("encoder_forward", &shape, &kb.download(&d_out), &want, Tol::Bits, "one addition: exact");
        });

        rep.case("encoder_backward", &shape, |rep| {
            let (mut dwte, mut dwpe) = (dwte0.clone(), dwpe0.clone());
            cpu.encoder_backward(&mut dwte, &mut dwpe, &dout, &tok, b, t, c);
            let (mut d_dwte, mut d_dwpe, d_dout) = (kb.upload(&dwte0), kb.upload(&dwpe0), kb.upload(&dout));
            kb.encoder_backward(&mut d_dwte, &mut d_dwpe, &d_dout, &d_ids, b, t, c);
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
            cpu.encoder_forward_at(&mut want, &tok, &pos, &wte, &wpe, rows, c);
            let (mut d_out, d_pos) = (kb.upload(&nans(rows * c)), kb.upload_ids(&pos));
            kb.encoder_forward_at(&mut d_out, &d_ids, &d_pos, &d_wte, &d_wpe, rows, c);
            rep.cmp("encoder_forward_at", &shape, &kb.download(&d_out), &want, Tol::Bits, "one addition: exact");
            // An id ≥ V or a position ≥ P (the oracle panics) gives a NaN row, the others stay.
            let (mut bad_ids, mut bad_pos) = (tok.clone(), pos.clone());
            bad_ids[0] = v as u32;
            bad_pos[rows - 1] = p as u32;
            let (bi, bp) = (kb.upload_ids(&bad_ids), kb.upload_ids(&bad_pos));
            kb.encoder_forward_at(&mut d_out, &bi, &bp, &d_wte, &d_wpe, rows, c);
            let got = kb.download(&d_out);
            let nan_rows = got[..c].iter().chain(&got[(rows - 1) * c..]).all(|x| x.is_nan());
            let rest_ok = got[c..(rows - 1) * c] == want[c..(rows - 1) * c];
            rep.check("encoder_forward_at/out_of_range", &shape, nan_rows && rest_ok, "bad id / position → NaN row");
        });
    }
}

// ---- GELU --------------------------------------------------------------------------------------

fn gelu_cases<D: Device>(kb: &KernelBackend<D>, seed: u64, rep: &mut Report) {
    let cpu = CpuBackend::new(Some(1));
    for (case, &n) in [37usize * 48, BIG].iter().enumerate() {
        let shape = format!("N={n}");
        let mut rng = Rng::new(case_seed(seed, 1600 + case as u64));
        // x ~ N(0, 2²) (pre-activations of a trained GPT-2 are within a few units) plus the
        // edges: ±0, tiny, where tanh saturates in f32 (|u| > 9) and far beyond.
        let mut x = randn(&mut rng, n, 2.0);
        let edges = [0.0f32, -0.0, 1e-6, -1e-6, 3.0, -3.0, 6.0, -6.0, 10.0, -10.0, 50.0, -50.0];
        x[..edges.len()].copy_from_slice(&edges);
        let dy = randn(&mut rng, n, 1.0);
        let d_x = kb.upload(&x);

        rep.case("gelu_forward", &shape, |rep| {
            let mut want = vec![0.0; n];
            cpu.gelu_forward(&mut want, &x);
            let mut d_out = kb.upload(&nans(n));
            kb.gelu_forward(&mut d_out, &d_x);
            // Tolerance. out = 0.5·x·(1 + tanh u): the oracle's tanh is within 2e-7 absolute
            // of the true one, tanhf within ~2 ulps (≤ 1.2e-7), so out differs by ≤ 0.5·|x|·
            // 3.2e-7 plus a few ulps of |out|; where x < 0 and out → 0 that error is absolute,
            // not relative. Per element 2e-6·max(|out|, 1) covers |x| ≤ 6 (beyond, tanh is ±1
            // exactly on both sides; the edges ±10, ±50 check it). A wrong constant (0.0447
            // for 0.044715) moves out by ≥ 1e-4.
            let tol = Tol::Each { tol: 2e-6, floor: 1.0, abs: 0.0 };
            rep.cmp("gelu_forward", &shape, &kb.download(&d_out), &want, tol, "per value, of max(|out|, 1)");
        });

        rep.case("gelu_backward", &shape, |rep| {
            let mut want = dy.clone();
            cpu.gelu_backward(&mut want, &x);
            let mut d_d = kb.upload(&dy);
            kb.gelu_backward(&mut d_d, &d_x);
            // Tolerance. gelu'(x) = 0.5(1 + th) + 0.5·x·(1 − th²)·du: a tanh error δ ≤ 3.2e-7
            // (as above) moves it by ≤ 0.5δ + |x|·|th|·du·δ ≲ 10δ ≈ 3e-6 at |x| ≈ 4 (du ≈
            // 2.5), less elsewhere (1 − th² → 0 beyond), times |dy| ≲ 5 (the largest of
            // 267k normal draws): ≤ 1.6e-5 absolute where d is near 0. Per element:
            // 2e-5·max(|d|, 1). A sign error in the sech² term moves it by O(0.1).
            let tol = Tol::Each { tol: 2e-5, floor: 1.0, abs: 0.0 };
            rep.cmp("gelu_backward", &shape, &kb.download(&d_d), &want, tol, "per value, of max(|d|, 1)");
        });
    }
}

// ---- bias gradient -----------------------------------------------------------------------------

fn bias_backward_cases<D: Device>(kb: &KernelBackend<D>, seed: u64, rep: &mut Report) {
    let cpu = CpuBackend::new(Some(1));
    // (rows, cols): 37 columns = two 32-column blocks, the second with 5 live lanes; 45 rows
    // not a multiple of the 8 row groups; 300 columns (10 blocks) over 7 rows (some row groups
    // idle); one row.
    let cases = [(45usize, 37usize), (7, 300), (1, 48)];
    for (case, &(rows, cols)) in cases.iter().enumerate() {
        let shape = format!("rows={rows} cols={cols}");
        rep.case("bias_backward", &shape, |rep| {
            let mut rng = Rng::new(case_seed(seed, 1700 + case as u64));
            let dout = randn(&mut rng, rows * cols, 1.0);
            let db0 = randn(&mut rng, cols, 1.0);
            let mut want = db0.clone();
            cpu.bias_backward(&mut want, &dout, rows, cols);
            let (mut d_db, d_dout) = (kb.upload(&db0), kb.upload(&dout));
            kb.bias_backward(&mut d_db, &d_dout, rows, cols);
            // Tolerance. Each value is dbias₀ + a rows-term f32 sum, which the kernel adds as 8
            // strided partial sums then in group order, the oracle in row order: reordering
            // moves it by ≤ rows·2⁻²⁴·Σ|terms| ≈ 45·6e-8·37 ≈ 1e-4 in the worst case, ~√rows
            // ulps of Σ|terms| typically. Per element relative to Σ|terms| would be tightest;
            // of the tensor's scale (≈ 2√rows): 2e-6. A dropped row moves a value by O(1).
            let tol = Tol::Scale { tol: 2e-6, floor: 1.0 };
            rep.cmp("bias_backward", &shape, &kb.download(&d_db), &want, tol, "of the scale (sum order)");
        });
    }
}

// ---- AdamW -------------------------------------------------------------------------------------

fn adamw_cases<D: Device>(kb: &KernelBackend<D>, seed: u64, rep: &mut Report) {
    let cpu = CpuBackend::new(Some(1));
    let base = AdamWStep { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, step: 1, grad_scale: 1.0 };
    // Step 1 (bias corrections 0.1 and 0.05, the largest), a later step with clipping folded
    // in (grad_scale) and no weight decay (biases), and a large N for the grid-stride loop.
    let configs = [
        (37usize * 48, base),
        (1001, AdamWStep { step: 7, grad_scale: 0.37, weight_decay: 0.0, lr: 3e-4, ..base }),
        (BIG, AdamWStep { step: 1000, ..base }),
    ];
    for (case, &(n, h)) in configs.iter().enumerate() {
        let shape = format!("N={n} step={} wd={} grad_scale={}", h.step, h.weight_decay, h.grad_scale);
        rep.case("adamw", &shape, |rep| {
            let mut rng = Rng::new(case_seed(seed, 1800 + case as u64));
            let p0 = randn(&mut rng, n, 1.0);
            let g = randn(&mut rng, n, 1.0);
            // Moments as after some steps: m ~ 0.1·N(0,1), v ~ |0.01·N(0,1)| (v ≥ 0), with a few
            // zeros (a fresh state, as at step 1).
            let mut m0 = randn(&mut rng, n, 0.1);
            let mut v0: Vec<f32> = randn(&mut rng, n, 0.01).into_iter().map(f32::abs).collect();
            if h.step == 1 {
                m0.fill(0.0);
                v0.fill(0.0);
            }
            let (mut p, mut m, mut v) = (p0.clone(), m0.clone(), v0.clone());
            cpu.adamw(&mut p, &g, &mut m, &mut v, h);
            let (mut d_p, d_g, mut d_m, mut d_v) = (kb.upload(&p0), kb.upload(&g), kb.upload(&m0), kb.upload(&v0));
            kb.adamw(&mut d_p, &d_g, &mut d_m, &mut d_v, h);
            // Tolerances. Same formula, same operation order, the bias corrections computed
            // identically on the host; what differs is FMA contraction on a GPU (b1·m + (1−b1)·g
            // as one fma: ≤ 1 ulp of each term) and device vs host division/sqrt (both
            // correctly rounded without fast-math). m and v: a few ulps of the larger term,
            // 1e-6 per element of max(|m|, 1e-3) (m can cancel to near 0; its terms are
            // ≥ 1e-3 typically). The update lr·m̂/(√v̂ + eps) then carries a relative error of
            // a few ulps, lr ≤ 1e-3 times that is far below an ulp of |p| ~ 1: param to 3e-7
            // per element of max(|p|, 1e-2) (≈ 2.5 ulps). A missing bias correction or decay
            // moves p by ≥ 1e-4.
            let tol = Tol::Each { tol: 1e-6, floor: 1e-3, abs: 0.0 };
            rep.cmp("adamw/m", &shape, &kb.download(&d_m), &m, tol, "per value, of max(|m|, 1e-3)");
            let tol = Tol::Each { tol: 1e-6, floor: 1e-5, abs: 0.0 };
            rep.cmp("adamw/v", &shape, &kb.download(&d_v), &v, tol, "per value, of max(|v|, 1e-5)");
            let tol = Tol::Each { tol: 3e-7, floor: 1e-2, abs: 0.0 };
            rep.cmp("adamw/param", &shape, &kb.download(&d_p), &p, tol, "per value, of max(|p|, 1e-2)");
        });
    }
}

// ---- global norm -------------------------------------------------------------------------------

fn global_norm_cases<D: Device>(kb: &KernelBackend<D>, seed: u64, rep: &mut Report) {
    let cpu = CpuBackend::new(Some(1));
    // Buffer lengths: ragged small ones with an empty one among them (no partials, no launch);
    // one buffer of one value; a big one whose partial launch has the full 1024 blocks, each
    // thread looping twice, next to small ones (partial slots at offsets).
    let cases: [&[usize]; 3] = [&[1776, 0, 37, 300], &[1], &[45, BIG, 7]];
    for (case, lens) in cases.iter().enumerate() {
        let shape = format!("lens={lens:?}");
        rep.case("global_norm", &shape, |rep| {
            let mut rng = Rng::new(case_seed(seed, 1900 + case as u64));
            let host: Vec<Vec<f32>> = lens.iter().map(|&n| randn(&mut rng, n, 0.3)).collect();
            let want = cpu.global_norm(&host.iter().collect::<Vec<_>>());
            let dev: Vec<_> = host.iter().map(|h| kb.upload(h)).collect();
            let got = kb.global_norm(&dev.iter().collect::<Vec<_>>());
            // Tolerance. The oracle sums squares in f64, the device in f32: each thread adds
            // its ≤ 2 grid-stride values, then warp, block and final block trees (depth ≤ 5 +
            // 5 + 10 + ... ≈ 25 additions per value): relative error ≤ 25·2⁻²⁴ ≈ 1.5e-6 of the
            // sum of positive terms, halved by the sqrt. 2e-6 relative; a dropped block or
            // buffer moves the norm by ≥ 1e-3 here.
            let tol = Tol::Each { tol: 2e-6, floor: 0.0, abs: 0.0 };
            rep.cmp("global_norm", &shape, &[got], &[want], tol, "relative, f32 tree vs f64 sum");
        });
    }
    rep.case("global_norm", "no values", |rep| {
        let empty = kb.upload(&[]);
        let (none, zero) = (kb.global_norm(&[]), kb.global_norm(&[&empty, &empty]));
        rep.check("global_norm", "no values", none == 0.0 && zero == 0.0, "no buffers / empty buffers → 0");
    });
}

// ---- scale -------------------------------------------------------------------------------------

fn scale_cases<D: Device>(kb: &KernelBackend<D>, seed: u64, rep: &mut Report) {
    let cpu = CpuBackend::new(Some(1));
    for (case, &(n, alpha)) in [(1001usize, 0.37f32), (BIG, -2.5)].iter().enumerate() {
        let shape = format!("N={n} alpha={alpha}");
        rep.case("scale", &shape, |rep| {
            let mut rng = Rng::new(case_seed(seed, 2000 + case as u64));
            let x = randn(&mut rng, n, 1.0);
            let mut want = x.clone();
            cpu.scale(&mut want, alpha);
            let mut d_x = kb.upload(&x);
            kb.scale(&mut d_x, alpha);
            // One correctly rounded multiply on both sides: bit-identical.
            rep.cmp("scale", &shape, &kb.download(&d_x), &want, Tol::Bits, "one multiply: exact");
        });
    }
}

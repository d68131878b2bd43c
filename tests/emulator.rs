//! The kernel emulator (src/backend/emu, kernels/emu/emulate.h): the exact kernels/*.cu
//! sources run on the host through the launch path the CUDA backend will use, compared with
//! plain-Rust oracles. Includes a negative control: a deliberately wrong kernel must disagree.

use gepa_dapo_grn::backend::emu::{EmuDevice, EmuError};
use gepa_dapo_grn::backend::launch::{DevPtr, KernelArgs, Launch};

/// Deterministic values in [-1, 1) (a small LCG; no test depends on the exact stream).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Launches a row-reduction kernel `(float* out, const float* inp, int rows, int cols)`.
fn row_kernel(name: &str, inp: &[f32], rows: usize, cols: usize, threads: u32) -> Vec<f32> {
    let dev = EmuDevice::new();
    let f = dev.function(name).unwrap();
    let mut out = vec![0.0f32; rows];
    let (out_p, inp_p) = (DevPtr::host(&mut out), DevPtr::host_const(inp));
    let (r, c) = (rows as i32, cols as i32);
    let mut args = KernelArgs::new();
    args.arg(&out_p).arg(&inp_p).arg(&r).arg(&c);
    // SAFETY: `out` holds `rows` values and `inp` `rows * cols`; one block per row writes
    // out[row] and reads that row only. Both outlive the synchronous launch and nothing else
    // touches them meanwhile.
    unsafe { dev.launch(&f, Launch::linear(rows as u32, threads), &mut args) }.unwrap();
    out
}

fn oracle_sum(inp: &[f32], cols: usize) -> Vec<f32> {
    inp.chunks(cols).map(|row| row.iter().map(|&x| x as f64).sum::<f64>() as f32).collect()
}

fn oracle_max(inp: &[f32], cols: usize) -> Vec<f32> {
    inp.chunks(cols).map(|row| row.iter().copied().fold(f32::NEG_INFINITY, f32::max)).collect()
}

/// Column counts: every one up to 70 (all residues mod 32 and both sides of 32 and 64), then
/// the edges of 128/256/512 and a few ragged ones up to 1000.
fn ragged_cols() -> Vec<usize> {
    let mut cols: Vec<usize> = (1..=70).collect();
    cols.extend([95, 96, 97, 127, 128, 129, 255, 256, 257, 300, 511, 512, 513, 640, 777, 999, 1000]);
    cols
}

#[test]
fn row_sum_and_max_match_the_oracle_on_ragged_shapes() {
    let rows = 7;
    let shapes = [64u32, 256].into_iter().flat_map(|t| ragged_cols().into_iter().map(move |c| (t, c)));
    // Plus full 1024-thread blocks (the device limit; 1024 fibers per block here).
    for (threads, cols) in shapes.chain([(1024, 1000), (1024, 1023)]) {
        let inp = values(rows * cols, cols as u64);
        let sum = row_kernel("row_sum_f32", &inp, rows, cols, threads);
        for (r, (got, want)) in sum.iter().zip(oracle_sum(&inp, cols)).enumerate() {
            let abs_sum: f32 = inp[r * cols..(r + 1) * cols].iter().map(|x| x.abs()).sum();
            let tol = 1e-6 * abs_sum + 1e-6;
            assert!((got - want).abs() <= tol, "row_sum block {threads} cols {cols} row {r}: {got} vs {want}");
        }
        let max = row_kernel("row_max_f32", &inp, rows, cols, threads);
        assert_eq!(max, oracle_max(&inp, cols), "row_max block {threads} cols {cols}");
    }
}

#[test]
fn negative_control_wrong_reduction_disagrees_with_the_oracle() {
    // Positive values, so every warp's partial sum is non-zero once it has columns.
    let rows = 7;
    for threads in [64u32, 256] {
        for cols in [threads as usize, 300, 1000] {
            let inp: Vec<f32> = values(rows * cols, 7).iter().map(|x| x + 1.5).collect();
            let want = oracle_sum(&inp, cols);
            let good = row_kernel("row_sum_f32", &inp, rows, cols, threads);
            let bad = row_kernel("selftest_wrong_row_sum_f32", &inp, rows, cols, threads);
            for r in 0..rows {
                assert!((good[r] - want[r]).abs() <= 1e-4 * want[r], "correct kernel, cols {cols} row {r}");
                // The last warp's columns are missing, so the wrong sum falls short by their total.
                assert!(
                    want[r] - bad[r] > 1.0,
                    "the wrong kernel agreed with the oracle (block {threads}, cols {cols}, row {r}: {} vs {})",
                    bad[r],
                    want[r]
                );
            }
        }
    }
    // Control of the control: when the last warp has no columns, the bug is invisible.
    let (cols, threads) = (20usize, 64u32);
    let inp = values(rows * cols, 3);
    let bad = row_kernel("selftest_wrong_row_sum_f32", &inp, rows, cols, threads);
    for (b, w) in bad.iter().zip(oracle_sum(&inp, cols)) {
        assert!((b - w).abs() <= 1e-5, "{b} vs {w}");
    }
}

#[test]
fn warp_shuffle_sum_is_exact() {
    let dev = EmuDevice::new();
    let f = dev.function("selftest_warp_sum_f32").unwrap();
    let (blocks, threads) = (3u32, 96u32);
    let n = (blocks * threads) as usize;
    // Small integers: every partial sum is exact in f32, whatever the order.
    let inp: Vec<f32> = (0..n).map(|i| ((i * 37) % 101) as f32 - 50.0).collect();
    let mut out = vec![f32::NAN; n / 32];
    let (o, i) = (DevPtr::host(&mut out), DevPtr::host_const(&inp));
    let mut args = KernelArgs::new();
    args.arg(&o).arg(&i);
    // SAFETY: the launch covers exactly `n` threads, each reading inp[thread]; lane 0 of each of
    // the n/32 warps writes out[warp]. Buffers outlive the synchronous launch.
    unsafe { dev.launch(&f, Launch::linear(blocks, threads), &mut args) }.unwrap();
    let want: Vec<f32> = inp.chunks(32).map(|w| w.iter().sum()).collect();
    assert_eq!(out, want);
}

#[test]
fn shuffles_follow_cuda_lane_semantics() {
    let dev = EmuDevice::new();
    let f = dev.function("selftest_shuffles").unwrap();
    let (blocks, threads) = (2u32, 64u32);
    let n = (blocks * threads) as usize;
    let mut out = vec![0u32; 4 * n];
    let o = DevPtr::host(&mut out);
    let mut args = KernelArgs::new();
    args.arg(&o);
    // SAFETY: each of the `n` threads writes out[4i..4i+4]; `out` holds 4n values.
    unsafe { dev.launch(&f, Launch::linear(blocks, threads), &mut args) }.unwrap();
    for i in 0..n {
        let lane = (i % 32) as u32;
        let down = if lane < 31 { lane + 1 } else { lane };
        let up = if lane >= 3 { lane - 3 } else { lane };
        let xor = if lane < 16 { lane } else { lane ^ 16 };
        assert_eq!(out[4 * i..4 * i + 4], [down, up, 50, xor], "thread {i} (lane {lane})");
    }
}

#[test]
fn dynamic_shared_memory_works_and_is_poisoned() {
    let dev = EmuDevice::new();
    let f = dev.function("selftest_reverse_dyn_f32").unwrap();
    let (blocks, n) = (4u32, 50i32);
    let inp = values((blocks as i32 * n) as usize, 11);
    let mut out = vec![0.0f32; inp.len()];
    let (o, i) = (DevPtr::host(&mut out), DevPtr::host_const(&inp));
    let mut args = KernelArgs::new();
    args.arg(&o).arg(&i).arg(&n);
    let cfg = Launch::linear(blocks, 64).with_shared(4 * n as u32);
    // SAFETY: block b reads and writes elements b*n .. b*n+n of buffers holding blocks*n
    // values; threads t >= n do nothing. The dynamic shared memory holds n floats.
    unsafe { dev.launch(&f, cfg, &mut args) }.unwrap();
    for (b, (got, src)) in out.chunks(n as usize).zip(inp.chunks(n as usize)).enumerate() {
        let want: Vec<f32> = src.iter().rev().copied().collect();
        assert_eq!(got, &want[..], "block {b}");
    }

    // Never-written dynamic shared memory reads as all-ones bits (a NaN for f32) in every block.
    let f = dev.function("selftest_read_dyn_uninit").unwrap();
    let mut out = vec![0u32; 3];
    let o = DevPtr::host(&mut out);
    let mut args = KernelArgs::new();
    args.arg(&o);
    // SAFETY: thread 0 of block b writes out[b]; `out` holds 3 values for 3 blocks.
    unsafe { dev.launch(&f, Launch::linear(3, 32).with_shared(16), &mut args) }.unwrap();
    assert_eq!(out, [u32::MAX; 3]);

    // More than the default 48 KiB is refused, as on the device without an opt-in.
    let mut args = KernelArgs::new();
    args.arg(&o);
    // SAFETY: refused before any thread runs; were it run, it would write out[0] only.
    let err = unsafe { dev.launch(&f, Launch::linear(1, 32).with_shared(48 * 1024 + 1), &mut args) }.unwrap_err();
    assert!(matches!(err, EmuError::TooMuchSharedMemory(..)), "{err}");
}

#[test]
fn atomics_accumulate_across_blocks() {
    let dev = EmuDevice::new();
    let f = dev.function("selftest_atomics").unwrap();
    let (n, nbins) = (1000i32, 7i32);
    // Small integers: the sum is exact in any order.
    let inp: Vec<f32> = (0..n).map(|i| ((i * 13) % 17 - 8) as f32).collect();
    let mut sum = vec![0.0f32];
    let mut counts = vec![0u32; nbins as usize];
    let mut max = vec![f32::NEG_INFINITY];
    let (s, c, m, i) =
        (DevPtr::host(&mut sum), DevPtr::host(&mut counts), DevPtr::host(&mut max), DevPtr::host_const(&inp));
    let mut args = KernelArgs::new();
    args.arg(&s).arg(&c).arg(&m).arg(&i).arg(&n).arg(&nbins);
    let cfg = Launch::cover(n as usize, 64);
    assert_eq!(cfg.grid.0, 16);
    // SAFETY: threads i < n read inp[i] and update sum[0], counts[i % nbins], max[0] atomically;
    // every buffer has the length those indices need and outlives the launch.
    unsafe { dev.launch(&f, cfg, &mut args) }.unwrap();
    assert_eq!(sum[0], inp.iter().sum::<f32>());
    let want: Vec<u32> = (0..nbins).map(|b| (0..n).filter(|i| i % nbins == b).count() as u32).collect();
    assert_eq!(counts, want);
    assert_eq!(max[0], 8.0);
}

#[test]
fn bf16_conversion_rounds_to_nearest_even() {
    let dev = EmuDevice::new();
    let f = dev.function("selftest_bf16_roundtrip").unwrap();
    let mut inp = values(500, 5).iter().map(|x| x * 1e3).collect::<Vec<_>>();
    inp.extend([
        0.0,
        -0.0,
        1.0,
        f32::from_bits(0x3f80_8000), // exactly halfway, even below: rounds down
        f32::from_bits(0x3f81_8000), // exactly halfway, odd below: rounds up
        f32::from_bits(0x3f80_8001), // just above halfway
        f32::MAX,                    // rounds to infinity
        f32::MIN_POSITIVE / 3.0,     // subnormal
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::from_bits(0x7f80_0001), // signalling NaN: stays NaN
    ]);
    let n = inp.len() as i32;
    let mut bits = vec![0u16; inp.len()];
    let mut back = vec![0.0f32; inp.len()];
    let (b, k, i) = (DevPtr::host(&mut bits), DevPtr::host(&mut back), DevPtr::host_const(&inp));
    let mut args = KernelArgs::new();
    args.arg(&b).arg(&k).arg(&i).arg(&n);
    // SAFETY: threads i < n read inp[i] and write bits[i], back[i]; all hold n values.
    unsafe { dev.launch(&f, Launch::cover(inp.len(), 128), &mut args) }.unwrap();
    for (j, &x) in inp.iter().enumerate() {
        let want = half::bf16::from_f32(x);
        if x.is_nan() {
            assert!(want.is_nan() && back[j].is_nan(), "NaN {x:?} -> {:#06x}", bits[j]);
        } else {
            assert_eq!(bits[j], want.to_bits(), "{x:e} ({:#010x})", x.to_bits());
            assert_eq!(back[j].to_bits(), want.to_f32().to_bits());
        }
    }
}

#[test]
fn thread_and_block_indices_of_a_3d_launch() {
    let dev = EmuDevice::new();
    let f = dev.function("selftest_indices").unwrap();
    let cfg = Launch { grid: (2, 3, 2), block: (4, 2, 3), shared_bytes: 0 };
    let pack = |(x, y, z): (u32, u32, u32)| x | y << 10 | z << 20;
    let n = 12 * 24;
    let mut out = vec![u32::MAX; 4 * n];
    let o = DevPtr::host(&mut out);
    let mut args = KernelArgs::new();
    args.arg(&o);
    // SAFETY: each of the 12 x 24 threads writes its own 4 values of `out` (4 * 288 values).
    unsafe { dev.launch(&f, cfg, &mut args) }.unwrap();
    let mut g = 0;
    for bz in 0..2 {
        for by in 0..3 {
            for bx in 0..2 {
                for tz in 0..3 {
                    for ty in 0..2 {
                        for tx in 0..4 {
                            let want = [pack((tx, ty, tz)), pack((bx, by, bz)), pack(cfg.block), pack(cfg.grid)];
                            assert_eq!(out[4 * g..4 * g + 4], want, "thread {g}");
                            g += 1;
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn launch_errors_are_reported_not_run() {
    let dev = EmuDevice::new();
    for k in ["row_sum_f32", "row_max_f32", "selftest_wrong_row_sum_f32", "selftest_warp_sum_f32"] {
        assert!(dev.kernel_names().any(|n| n == k), "kernel {k} not compiled");
    }
    assert!(matches!(dev.function("no_such_kernel"), Err(EmuError::UnknownKernel(..))));

    let f = dev.function("row_sum_f32").unwrap();
    let mut out = vec![0.0f32; 1];
    let inp = vec![1.0f32; 4];
    let (o, i) = (DevPtr::host(&mut out), DevPtr::host_const(&inp));
    let (rows, cols) = (1i32, 4i32);

    // Each case below is rejected before any thread runs (the arguments would be valid for a
    // 1 x 4 reduction otherwise).
    let mut args = KernelArgs::new();
    args.arg(&o).arg(&i).arg(&rows);
    // SAFETY: rejected (3 arguments for 4 parameters) before the kernel runs.
    let err = unsafe { dev.launch(&f, Launch::linear(1, 32), &mut args) }.unwrap_err();
    assert_eq!(err, EmuError::ArgumentCount("row_sum_f32", 3));

    let mut args = KernelArgs::new();
    args.arg(&o).arg(&rows).arg(&rows).arg(&cols);
    // SAFETY: rejected (a 4-byte value for a pointer parameter) before the kernel runs.
    let err = unsafe { dev.launch(&f, Launch::linear(1, 32), &mut args) }.unwrap_err();
    assert!(matches!(err, EmuError::ArgumentSize(..)), "{err}");

    for cfg in [Launch::linear(1, 2048), Launch::linear(0, 32), Launch::linear(1, 0)] {
        let mut args = KernelArgs::new();
        args.arg(&o).arg(&i).arg(&rows).arg(&cols);
        // SAFETY: rejected (invalid configuration) before the kernel runs.
        let err = unsafe { dev.launch(&f, cfg, &mut args) }.unwrap_err();
        assert!(matches!(err, EmuError::BadConfig(..)), "{cfg:?}: {err}");
    }

    let mut args = KernelArgs::new();
    args.arg(&o).arg(&i).arg(&rows).arg(&cols);
    // SAFETY: one block reduces the single 4-value row into out[0].
    unsafe { dev.launch(&f, Launch::linear(1, 32), &mut args) }.unwrap();
    assert_eq!(out[0], 4.0);
}

#[test]
fn divergent_barrier_is_reported_not_hung() {
    let dev = EmuDevice::new();
    let f = dev.function("selftest_divergent_barrier").unwrap();
    let mut out = vec![0u32; 128];
    let o = DevPtr::host(&mut out);
    let mut args = KernelArgs::new();
    args.arg(&o);
    let cfg = Launch::linear(2, 64);
    // SAFETY: thread t of block b would write out[64b + t]; `out` holds 2 * 64 values. The
    // launch stops in block 0, where lane 0 of each warp waits at __syncthreads() and the
    // other lanes at a shuffle.
    let err = unsafe { dev.launch(&f, cfg, &mut args) }.unwrap_err();
    assert_eq!(err, EmuError::DivergentBarrier("selftest_divergent_barrier", cfg));
    assert!(err.to_string().contains("selftest_divergent_barrier"), "{err}");
    // Nothing got past the barriers, and block 1 never ran.
    assert_eq!(out, vec![0u32; 128]);

    // The emulator is usable afterwards: the abandoned fibers leave no state behind.
    let f = dev.function("selftest_shuffles").unwrap();
    let mut out = vec![0u32; 4 * 64];
    let o = DevPtr::host(&mut out);
    let mut args = KernelArgs::new();
    args.arg(&o);
    // SAFETY: each of the 64 threads writes out[4i..4i+4]; `out` holds 4 * 64 values.
    unsafe { dev.launch(&f, Launch::linear(1, 64), &mut args) }.unwrap();
    assert_eq!(out[4 * 33 + 2], 50, "broadcast of lane 5 (times 10) after a stuck launch");
}

/// The two thread orders are both run and expose a missing barrier differently: a thread
/// reading its neighbour's slot before the neighbour wrote it sees the poison. In linear order
/// every thread but the last runs before its right-hand neighbour; in reverse order only the
/// last thread's neighbour (thread 0) has not run yet.
#[test]
fn both_thread_orders_run_and_expose_a_missing_barrier_differently() {
    let dev = EmuDevice::new();
    let f = dev.function("selftest_missing_barrier").unwrap();
    let n = 64usize;
    let run = |reverse: bool| {
        let mut out = vec![0u32; n];
        let o = DevPtr::host(&mut out);
        let mut args = KernelArgs::new();
        args.arg(&o);
        EmuDevice::set_reverse_thread_order(reverse);
        // SAFETY: thread t writes out[t] of n values; the dynamic shared memory holds n words.
        let r = unsafe { dev.launch(&f, Launch::linear(1, n as u32).with_shared(4 * n as u32), &mut args) };
        EmuDevice::set_reverse_thread_order(false);
        r.unwrap();
        out
    };
    let poison = u32::MAX;
    let linear: Vec<u32> = (0..n).map(|t| if t + 1 < n { poison } else { 0 }).collect();
    let reverse: Vec<u32> = (0..n).map(|t| if t + 1 < n { t as u32 + 1 } else { poison }).collect();
    assert_eq!(run(false), linear);
    assert_eq!(run(true), reverse);
}

//! Parity of the device op set (`KernelBackend`: the fused kernels of `kernels/*.cu`, the
//! device GEMM, the chunked objective) with the CPU oracle, through the shared harness
//! `backend::parity` that `dapo selftest` also runs. Here it runs on the emulator, and on GPU 0
//! when one is usable. The cases, shapes and tolerances (with their justifications) live in
//! `src/backend/parity/`; the table is printed (`cargo test -- --nocapture`).

mod common;

use gepa_dapo_grn::backend::device::Device;
use gepa_dapo_grn::backend::emu::EmuDevice;
use gepa_dapo_grn::backend::kernel::EmuBackend;
use gepa_dapo_grn::selftest::{self as parity, compare, ParityRow, Tol, FAMILIES};

const SEED: u64 = 0;

/// Asserts every row passed and every op family has at least one row.
fn assert_all_pass(device: &str, rows: &[ParityRow]) {
    let table = parity::table(rows);
    println!("{device}:\n{table}");
    let failed: Vec<&ParityRow> = rows.iter().filter(|r| !r.pass).collect();
    assert!(failed.is_empty(), "{} of {} rows failed on {device}:\n{table}", failed.len(), rows.len());
    for family in FAMILIES {
        let n = rows.iter().filter(|r| r.op == family || r.op.starts_with(&format!("{family}/"))).count();
        assert!(n > 0, "no {family} rows on {device}");
    }
}

#[test]
fn every_kernel_matches_the_oracle_emulated() {
    let start = std::time::Instant::now();
    let rows = parity::run_all(&EmuBackend::emulated(), SEED);
    println!("emulated run: {} rows in {:.1} s", rows.len(), start.elapsed().as_secs_f64());
    assert_all_pass("emulator", &rows);
    // The full GPT-2 vocabulary is among the cases.
    assert!(rows.iter().any(|r| r.op.starts_with("logprob_fwd") && r.shape.contains("V=50257")));
    assert!(rows.iter().any(|r| r.op.starts_with("objective") && r.shape.contains("V=50257")));
}

/// The same table with every block's threads run in the reverse order (at the start and after
/// each barrier): a kernel missing a barrier reads a value an earlier thread has not yet
/// written in one of the two orders, so passing both is what the emulator can say about races.
#[test]
fn every_kernel_matches_the_oracle_emulated_in_reverse_thread_order() {
    EmuDevice::set_reverse_thread_order(true);
    let rows = std::panic::catch_unwind(|| parity::run_all(&EmuBackend::emulated(), SEED));
    EmuDevice::set_reverse_thread_order(false);
    assert_all_pass("emulator, threads in reverse order", &rows.expect("run_all reports failures as rows"));
}

/// The GEMM families' stated TF32 bounds hold under TF32 arithmetic: the emulator with every
/// matmul operand rounded as tensor cores round it (a GPU's cuBLASLt computes f32 matmuls so).
#[test]
fn the_gemm_families_meet_their_tf32_bounds_with_tf32_rounding() {
    let rows = parity::run_gemm_families(&EmuBackend::emulated_tf32(), SEED);
    let table = parity::table(&rows);
    println!("emulator, TF32 operands:\n{table}");
    assert!(rows.iter().all(|r| r.pass), "TF32 rounding breaks a stated bound:\n{table}");
    assert!(rows.iter().any(|r| r.op.starts_with("matmul")) && rows.iter().any(|r| r.op.starts_with("objective")));
    // The rounding is really applied: the matmul rows' errors are far above f32's.
    let worst = rows.iter().filter(|r| r.op.starts_with("matmul")).map(|r| r.max_rel).fold(0.0f64, f64::max);
    assert!(worst > 1e-5, "TF32-rounded matmuls show only f32-level error ({worst:.1e})");
}

/// Every bf16 kernel (`{op}_bf16`) and the bf16 GEMM on the emulator, in both thread orders:
/// each must run here, since no GPU runs them in CI.
#[test]
fn every_bf16_kernel_matches_the_oracle_emulated_in_both_thread_orders() {
    for reverse in [false, true] {
        EmuDevice::set_reverse_thread_order(reverse);
        let rows = std::panic::catch_unwind(|| parity::run_bf16(&EmuBackend::emulated_bf16(), SEED));
        EmuDevice::set_reverse_thread_order(false);
        let rows = rows.expect("run_bf16 reports failures as rows");
        let table = parity::table(&rows);
        println!("emulator, bf16 (reverse thread order: {reverse}):\n{table}");
        assert!(rows.iter().all(|r| r.pass), "bf16 rows fail (reverse {reverse}):\n{table}");
        // Every kernel with a bf16 entry point has rows, and the conversions are bit-exact.
        for op in BF16_OPS {
            assert!(rows.iter().any(|r| r.op.starts_with(op)), "no {op} rows");
        }
        assert!(rows.iter().filter(|r| r.op.starts_with("convert")).all(|r| r.max_abs == 0.0));
    }
}

/// The ops with bf16 kernels, as [`parity::run_bf16`] names their rows.
const BF16_OPS: [&str; 9] = [
    "convert/f32_bf16",
    "convert/bf16_f32",
    "gelu_forward_bf16",
    "gelu_backward_bf16",
    "layernorm_forward_bf16",
    "attention_forward_bf16",
    "attention_backward_bf16",
    "attention_cached_bf16",
    "bias_backward_bf16",
];

#[test]
fn every_kernel_matches_the_oracle_on_cuda() {
    if let Some(k) = common::gpu() {
        let rows = parity::run_all(&k, SEED);
        assert_all_pass(&format!("{} ({})", k.device().describe(), k.device().kernel_origin()), &rows);
        let rows = parity::run_bf16(&k.at_precision(gepa_dapo_grn::backend::Precision::BF16), SEED);
        assert!(rows.iter().all(|r| r.pass), "bf16 rows fail on the GPU:\n{}", parity::table(&rows));
    }
}

/// The harness can fail: a perturbed result is a FAIL row under each tolerance kind, not a
/// pass, and not a panic.
#[test]
fn a_wrong_result_fails_its_row() {
    let want: Vec<f32> = (0..100).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut got = want.clone();
    let ok = compare("grn_forward/out", "B=1", &got, &want, Tol::Scale { tol: 2e-5, floor: 1.0 }, "");
    assert!(ok.pass && ok.max_abs == 0.0, "{ok:?}");

    got[17] += 1e-3; // one value off by 1e-3 of a scale-1 tensor: 50× the tolerance
    let tols =
        [Tol::Scale { tol: 2e-5, floor: 1.0 }, Tol::Each { tol: 2e-6, floor: 0.0, abs: 2e-5 }, Tol::Exact, Tol::Bits];
    for tol in tols {
        let row = compare("grn_forward/out", "B=1", &got, &want, tol, "perturbed");
        assert!(!row.pass, "{tol:?} passed a perturbed value: {row:?}");
        assert!(row.note.contains("at 17"), "{row:?}");
        assert!((row.max_abs - 1e-3).abs() < 1e-6, "{row:?}");
        assert!(parity::table(&[row]).contains("FAIL"));
    }

    // NaN on one side only fails; NaN on both sides (an out-of-range target) is agreement.
    let mut nan_got = want.clone();
    nan_got[3] = f32::NAN;
    assert!(!compare("x", "", &nan_got, &want, Tol::Scale { tol: 1.0, floor: 1.0 }, "").pass);
    assert!(compare("x", "", &nan_got, &nan_got.clone(), Tol::Exact, "").pass);
    // −0 vs +0: equal values, different bits.
    assert!(compare("x", "", &[-0.0], &[0.0], Tol::Exact, "").pass);
    assert!(!compare("x", "", &[-0.0], &[0.0], Tol::Bits, "").pass);
    // A length mismatch is a failing row, not a panic.
    assert!(!compare("x", "", &want[..99], &want, Tol::Exact, "").pass);
}

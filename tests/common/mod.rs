//! Test bodies shared by every backend. Each function takes a backend and the matmul
//! [`Precision`] it computes with, and asserts; [`test_backends!`] instantiates a list of them
//! for every backend, so the CPU, the emulated kernels and a GPU run the same checks.
#![allow(dead_code)]

pub mod cli;
pub mod golden;
pub mod gradcheck;
pub mod objective;

use gepa_dapo_grn::backend::cuda::{CudaBackend, CudaDevice};
use gepa_dapo_grn::data::arithmetic::addition_problems;
use gepa_dapo_grn::data::{Task, TaskDataset};
use gepa_dapo_grn::util::rng::Rng;

/// How a backend's matrix products round, for the tolerances of comparisons that go through a
/// GEMM: the CPU and the plain emulator multiply in f32; cuBLASLt on a GPU uses TF32 tensor
/// cores, and `EmuBackend::emulated_tf32` rounds every operand the same way, so the TF32
/// tolerances are exercised in CI without a GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// f32 products.
    F32,
    /// Operands rounded to TF32 (10-bit mantissa), f32 accumulation.
    Tf32,
}

impl Precision {
    /// `f32` or `tf32`, whichever this precision is.
    pub fn pick<T>(self, f32: T, tf32: T) -> T {
        match self {
            Precision::F32 => f32,
            Precision::Tf32 => tf32,
        }
    }
}

/// One `#[test]` per body and backend, candle's `test_device!` way: `test_backends!(m: a, b)`
/// makes modules `cpu`, `emu` (the kernels under the host emulator, f32 matmuls), `emu_tf32`
/// (the same with TF32-rounded matmul operands, the GPU's default f32 precision), `cuda` (GPU
/// 0 with TF32 matmuls) and `cuda_f32` (GPU 0 with `--matmul-precision f32`, held to the f32
/// tolerances); the GPU ones pass after printing why when there is no GPU, each with tests `a` and `b` that call
/// `m::a(backend, precision)`. `m` is a module in scope (or `crate` for the test file itself).
#[macro_export]
macro_rules! test_backends {
    ($m:tt : $($name:ident),+ $(,)?) => {
        mod cpu {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $name() {
                    $m::$name(gepa_dapo_grn::backend::cpu::CpuBackend::new(Some(2)), $crate::common::Precision::F32);
                }
            )+
        }
        mod emu {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $name() {
                    $m::$name(gepa_dapo_grn::backend::kernel::EmuBackend::emulated(), $crate::common::Precision::F32);
                }
            )+
        }
        mod emu_tf32 {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $name() {
                    let k = gepa_dapo_grn::backend::kernel::EmuBackend::emulated_tf32();
                    $m::$name(k, $crate::common::Precision::Tf32);
                }
            )+
        }
        mod cuda {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $name() {
                    if let Some(k) = $crate::common::gpu() {
                        $m::$name(k, $crate::common::Precision::Tf32);
                    }
                }
            )+
        }
        mod cuda_f32 {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $name() {
                    // cuBLASLt's pedantic f32: a GPU held to the CPU oracle's tolerances.
                    if let Some(k) = $crate::common::gpu_at(gepa_dapo_grn::backend::Precision::F32) {
                        $m::$name(k, $crate::common::Precision::F32);
                    }
                }
            )+
        }
    };
}

/// The folder of the committed test data: `tests/data/` of this checkout, or `$GEPA_TEST_DATA`
/// when set, so a test executable built here runs on a GPU host that has only the data
/// (`tools/gpu_check.sh`).
pub fn test_data() -> std::path::PathBuf {
    std::env::var_os("GEPA_TEST_DATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data"))
}

/// GPU 0 at `precision` as a backend, or `None` after saying why the GPU test is skipped.
pub fn gpu_at(precision: gepa_dapo_grn::backend::Precision) -> Option<CudaBackend> {
    match CudaDevice::open(0) {
        Ok(d) => Some(CudaBackend::with_precision(d, precision)),
        Err(why) => {
            println!("skipped, no GPU: {why}");
            None
        }
    }
}

/// GPU 0 with TF32 matmuls (the GPU's default f32 precision) as a backend, or `None` after
/// saying why the GPU test is skipped (no GPU here).
pub fn gpu() -> Option<CudaBackend> {
    gpu_at(gepa_dapo_grn::backend::Precision::TF32)
}

/// The first `n` tasks of the built-in addition task (seed 1), `task_id` "long" or "short" by
/// prompt length.
pub fn tasks(n: usize) -> TaskDataset {
    let (train, _) = addition_problems(1);
    TaskDataset::from_tasks(
        train
            .into_iter()
            .take(n)
            .map(|(p, a)| Task {
                prompt: p.clone(),
                task_id: if p.len() > 5 { "long".into() } else { "short".into() },
                record: serde_json::json!({ "prompt": p, "answer": a }),
            })
            .collect(),
    )
}

/// `n` samples of N(0, std²) from a seeded generator.
pub fn randn(rng: &mut Rng, n: usize, std: f32) -> Vec<f32> {
    (0..n).map(|_| rng.normal() * std).collect()
}

/// Σ a·b in f64.
pub fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

/// max |a − b| / max(max |b|, floor): the error relative to the tensor's scale.
pub fn rel_err(a: &[f32], b: &[f32], floor: f32) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let scale = b.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(floor);
    a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

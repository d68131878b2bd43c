//! `dapo selftest`: every parity case of [`crate::selftest`] on a GPU (or the kernel
//! emulator), compared with the CPU oracle, printed as a table. Exit code 1 when a row fails,
//! so a GPU host can be checked with one command before it trains.
//!
//! `dapo selftest --resources` instead prints every kernel's registers, shared memory, spills
//! and sm_90 occupancy from `ptxas` ([`crate::backend::cuda::resources`]); no GPU needed.

use super::device::{open_cuda, DeviceChoice};
use crate::backend::cuda::{CudaBackend, CudaDevice};
use crate::backend::kernel::{EmuBackend, KernelBackend};
use crate::backend::Precision;
use crate::error::{Error, Result};

/// Arguments of `dapo selftest`.
#[derive(clap::Args, Debug)]
pub struct SelftestArgs {
    /// Device to check: auto (GPU 0 if usable, else the emulator), cuda, cuda:N or emu.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// Seed of the random inputs (the same seed gives the same inputs on every device).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Instead of the parity checks: assemble the embedded PTX with ptxas (found through $PTXAS,
    /// then PATH) and print each kernel's registers, shared memory, spills and occupancy on
    /// sm_90; exit code 1 when a kernel spills. Needs no GPU.
    #[arg(long, conflicts_with_all = ["device", "seed"])]
    resources: bool,
}

/// Runs `dapo selftest`.
pub fn run(a: SelftestArgs) -> Result<()> {
    if a.resources {
        return resources();
    }
    match a.device {
        DeviceChoice::Cpu => {
            Err(Error::Invalid("selftest compares a device against the CPU oracle; pick cuda or emu".into()))
        }
        DeviceChoice::Cuda(n) => {
            let k = open_cuda(n, Precision::F32)?;
            check_cuda(&k, a.seed)
        }
        DeviceChoice::Emu => check(&EmuBackend::emulated(), a.seed),
        DeviceChoice::Auto => match CudaDevice::open(0) {
            Ok(d) => check_cuda(&CudaBackend::new(d), a.seed),
            Err(why) => {
                outln!("no GPU found ({why}); running the kernels on the emulator instead");
                check(&EmuBackend::emulated(), a.seed)
            }
        },
    }
}

fn check_cuda(k: &CudaBackend, seed: u64) -> Result<()> {
    outln!("kernels: {}", k.device().kernel_origin());
    check(k, seed)
}

/// Every parity case at the three precisions a run can ask for: all families in f32 with true
/// f32 products (`--dtype f32 --matmul-precision f32`), the GEMM families again with TF32
/// products (`matmul_tf32`, `objective_tf32`: the default f32 mode on a GPU), and every bf16
/// kernel with bf16 products (`--dtype bf16`, the GPU default).
fn check<D: crate::backend::device::Device>(k: &KernelBackend<D>, seed: u64) -> Result<()> {
    outln!("device: {}", k.device().describe());
    outln!("seed: {seed}");
    let start = std::time::Instant::now();
    let mut rows = crate::selftest::run_all(&k.at_precision(Precision::F32), seed);
    let mut tf32 = crate::selftest::run_gemm_families(&k.at_precision(Precision::TF32), seed);
    for r in &mut tf32 {
        // "objective/loss" → "objective_tf32/loss": the family names its precision.
        let (family, rest) = r.op.split_once('/').map_or((r.op.as_str(), ""), |(f, x)| (f, x));
        r.op = if rest.is_empty() { format!("{family}_tf32") } else { format!("{family}_tf32/{rest}") };
    }
    rows.extend(tf32);
    rows.extend(crate::selftest::run_bf16(&k.at_precision(Precision::BF16), seed));
    crate::cli::write_stdout(format_args!("{}", crate::selftest::table(&rows)))?;
    let passed = rows.iter().filter(|r| r.pass).count();
    outln!("{passed}/{} passed ({:.1} s)", rows.len(), start.elapsed().as_secs_f64());
    if passed == rows.len() {
        Ok(())
    } else {
        let failed: Vec<String> = rows.iter().filter(|r| !r.pass).map(|r| format!("{} ({})", r.op, r.shape)).collect();
        Err(Error::Invalid(format!(
            "selftest: {} of {} parity checks failed on {}: {}",
            failed.len(),
            rows.len(),
            k.device().describe(),
            failed.join(", ")
        )))
    }
}

/// `dapo selftest --resources`: the table `kernels/README.md` carries ("Resources on sm_90").
fn resources() -> Result<()> {
    use crate::backend::cuda::resources::{Ptxas, Report, ResourcesError};
    let invalid = |e: ResourcesError| Error::Invalid(format!("selftest --resources: {e}"));
    let ptxas = Ptxas::find().map_err(invalid)?;
    outln!("ptxas: {} ({})", ptxas.path.display(), ptxas.version);
    let report = Report::make(&ptxas).map_err(invalid)?;
    crate::cli::write_stdout(format_args!("{}", report.markdown()))?;
    let problems = report.problems();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid(format!("selftest --resources: {}", problems.join("; "))))
    }
}

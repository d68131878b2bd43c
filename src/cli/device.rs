//! `--device` and `--threads`: which backend a command runs on.
//!
//! `auto` takes GPU 0 when the driver, a device and cuBLASLt all load, and otherwise the CPU,
//! saying which and why on stderr. `cuda` / `cuda:N` insist on a GPU and fail with the reason
//! when there is none. `emu` is the kernel emulator (the CUDA code path run on the host, slow):
//! for `dapo selftest` and `dapo bench` on machines without a GPU.
//!
//! `--dtype` and `--matmul-precision` say how a kernel device computes
//! ([`crate::backend::precision`]): `auto` is bf16 mixed precision with TF32 for the remaining
//! f32 products on a GPU (what TRL's `bf16=True` and llm.c do), and f32 with true f32 products
//! on the emulator and the CPU. The CPU backend, the oracle, computes in f32 only: asking it
//! for bf16 or TF32 is an error naming the flag.

use std::str::FromStr;

use crate::backend::cpu::CpuBackend;
use crate::backend::cuda::{CudaBackend, CudaDevice};
use crate::backend::emu::EmuDevice;
use crate::backend::kernel::{EmuBackend, KernelBackend};
use crate::backend::prelude::*;
use crate::backend::{Dtype, MatmulPrecision, Precision};
use crate::error::{Error, Result};

/// A flag value that may be `auto` (`None`): the device picks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Auto<T>(pub Option<T>);

impl<T: FromStr<Err = String>> FromStr for Auto<T> {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s == "auto" {
            Ok(Auto(None))
        } else {
            s.parse().map(|v| Auto(Some(v))).map_err(|e: String| e.replace("(expected ", "(expected auto, "))
        }
    }
}

impl<T: std::fmt::Display> std::fmt::Display for Auto<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            None => f.write_str("auto"),
            Some(v) => v.fmt(f),
        }
    }
}

/// `--dtype` and `--matmul-precision` as given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrecisionChoice {
    /// `--dtype`.
    pub dtype: Auto<Dtype>,
    /// `--matmul-precision`.
    pub matmul: Auto<MatmulPrecision>,
}

impl PrecisionChoice {
    /// The precision on a GPU: bf16 and TF32 unless asked otherwise.
    pub fn on_gpu(self) -> Precision {
        let d = Precision::GPU_DEFAULT;
        Precision { dtype: self.dtype.0.unwrap_or(d.dtype), matmul: self.matmul.0.unwrap_or(d.matmul) }
    }

    /// The precision on the emulator: f32 with true f32 products unless asked otherwise.
    pub fn on_emulator(self) -> Precision {
        Precision { dtype: self.dtype.0.unwrap_or(Dtype::F32), matmul: self.matmul.0.unwrap_or(MatmulPrecision::F32) }
    }

    /// The CPU computes in f32 with f32 products only.
    pub fn check_cpu(self) -> Result<()> {
        if self.dtype.0 == Some(Dtype::Bf16) {
            return Err(Error::Invalid(
                "--dtype bf16: the CPU backend computes in f32 only; bf16 mixed precision runs on a kernel \
                 device (--device cuda, or emu to check it without a GPU)"
                    .into(),
            ));
        }
        if self.matmul.0 == Some(MatmulPrecision::Tf32) {
            return Err(Error::Invalid(
                "--matmul-precision tf32: the CPU backend multiplies in f32 only; TF32 is a GPU's (or emu's) mode"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// Where to compute (the value of `--device`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    /// A GPU if one is usable, else the CPU.
    Auto,
    /// The multi-threaded f32 CPU backend.
    Cpu,
    /// NVIDIA GPU number N (`cuda` is `cuda:0`).
    Cuda(usize),
    /// The kernel emulator: `kernels/*.cu` compiled for the host.
    Emu,
}

impl FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            "emu" => Ok(DeviceChoice::Emu),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(DeviceChoice::Cuda(n)),
                _ => Err(format!("`{s}` is not a device: expected auto, cpu, cuda, cuda:N or emu")),
            },
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceChoice::Emu => f.write_str("emu"),
        }
    }
}

/// The backend a `--device` value resolved to.
pub enum Resolved {
    /// The CPU.
    Cpu(CpuBackend),
    /// A GPU.
    Cuda(CudaBackend),
    /// The kernel emulator.
    Emu(EmuBackend),
}

/// Runs `$body` with `$k` bound to the backend a [`Resolved`] holds, whichever it is: the
/// GPT-2 commands are generic over [`Backend`], and this is where each is instantiated for the
/// CPU, a GPU and the emulator.
macro_rules! on_backend {
    ($resolved:expr, $k:ident => $body:expr) => {
        match $resolved {
            $crate::cli::device::Resolved::Cpu($k) => $body,
            $crate::cli::device::Resolved::Cuda($k) => $body,
            $crate::cli::device::Resolved::Emu($k) => $body,
        }
    };
}
pub(crate) use on_backend;

impl Resolved {
    /// The backend's name ("cpu (2 threads)", the GPU's name, "emu") and, on a kernel
    /// device, its precision.
    pub fn name(&self) -> String {
        match self {
            Resolved::Cpu(k) => k.name(),
            Resolved::Cuda(k) => format!("{}, {}", k.name(), k.precision().describe()),
            Resolved::Emu(k) => format!("{}, {}", k.name(), k.precision().describe()),
        }
    }
}

/// Opens GPU `n` at `precision`, with the flag in the error.
pub fn open_cuda(n: usize, precision: Precision) -> Result<CudaBackend> {
    CudaDevice::open(n)
        .map(|d| CudaBackend::with_precision(d, precision))
        .map_err(|e| Error::Invalid(format!("--device cuda:{n}: {e}")))
}

/// Resolves `--device` at the precision `prec` asks for: `auto` tries GPU 0 and falls back to
/// the CPU, saying which and why.
pub fn resolve(device: DeviceChoice, threads: Option<usize>, prec: PrecisionChoice) -> Result<Resolved> {
    let cpu = |why: Option<String>| -> Result<Resolved> {
        prec.check_cpu()?;
        let k = CpuBackend::new(threads);
        if let Some(why) = why {
            eprintln!("device: {} (auto: no usable GPU: {why})", k.name());
        }
        Ok(Resolved::Cpu(k))
    };
    match device {
        DeviceChoice::Cpu => cpu(None),
        DeviceChoice::Cuda(n) => open_cuda(n, prec.on_gpu()).map(Resolved::Cuda),
        DeviceChoice::Emu => Ok(Resolved::Emu(KernelBackend::with_precision(EmuDevice::new(), prec.on_emulator()))),
        DeviceChoice::Auto => match CudaDevice::open(0) {
            Ok(d) => {
                let k = CudaBackend::with_precision(d, prec.on_gpu());
                eprintln!("device: {} (auto: a usable GPU was found)", k.name());
                Ok(Resolved::Cuda(k))
            }
            Err(why) => cpu(Some(why.to_string())),
        },
    }
}

/// `--device` and `--threads` of the commands that run GPT-2 (train, sft, generate, eval).
#[derive(clap::Args, Debug, Clone)]
pub struct ComputeArgs {
    /// Backend: auto (GPU 0 if usable, else the CPU), cpu, cuda[:N], or emu (the kernel
    /// emulator: the CUDA code path on the host, slow; for checking without a GPU).
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// CPU worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub precision: PrecisionArgs,
}

/// `--dtype` and `--matmul-precision`, shared by every command that runs GPT-2.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct PrecisionArgs {
    /// Activation and compute-weight storage on a kernel device: auto (bf16 on a GPU, f32 on
    /// the emulator and the CPU), f32, or bf16 (mixed precision: f32 master weights, gradients
    /// and AdamW state; bf16 GEMMs with f32 accumulation; norms, softmax, losses and sampling
    /// in f32). The CPU computes in f32 only
    #[arg(long, default_value = "auto", value_name = "auto|f32|bf16")]
    pub dtype: Auto<Dtype>,
    /// How products of f32 operands are computed on a kernel device: auto (tf32 on a GPU, f32
    /// elsewhere), tf32 (tensor cores, 10-bit operand mantissas), or f32 (cuBLASLt's pedantic
    /// f32: a GPU run at the CPU oracle's precision)
    #[arg(long, default_value = "auto", value_name = "auto|f32|tf32")]
    pub matmul_precision: Auto<MatmulPrecision>,
}

impl PrecisionArgs {
    /// The two flags as given.
    pub fn choice(&self) -> PrecisionChoice {
        PrecisionChoice { dtype: self.dtype, matmul: self.matmul_precision }
    }
}

impl ComputeArgs {
    /// The backend `--device` names (see [`resolve`]), said on stderr with its precision.
    pub fn resolve(&self) -> Result<Resolved> {
        let r = resolve(self.device, self.threads, self.precision.choice())?;
        if self.device != DeviceChoice::Auto {
            // `auto` has said what it picked and why.
            eprintln!("device: {}", r.name());
        }
        Ok(r)
    }
}

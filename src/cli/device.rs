//! `--device` and `--threads`: which backend a command runs on.
//!
//! `auto` takes GPU 0 when the driver, a device and cuBLASLt all load, and otherwise the CPU,
//! saying which and why on stderr. `cuda` / `cuda:N` insist on a GPU and fail with the reason
//! when there is none. `emu` is the kernel emulator (the CUDA code path run on the host, slow):
//! for `dapo selftest` and `dapo bench` on machines without a GPU.

use std::str::FromStr;

use crate::backend::cpu::CpuBackend;
use crate::backend::cuda::{CudaBackend, CudaDevice};
use crate::backend::kernel::EmuBackend;
use crate::backend::prelude::*;
use crate::error::{Error, Result};

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
    /// The backend's name ("cpu (2 threads)", the GPU's name, "emu").
    pub fn name(&self) -> String {
        on_backend!(self, k => k.name())
    }
}

/// Opens GPU `n`, with the flag in the error.
pub fn open_cuda(n: usize) -> Result<CudaBackend> {
    CudaDevice::open(n).map(CudaBackend::new).map_err(|e| Error::Invalid(format!("--device cuda:{n}: {e}")))
}

/// Resolves `--device`: `auto` tries GPU 0 and falls back to the CPU, saying which and why.
pub fn resolve(device: DeviceChoice, threads: Option<usize>) -> Result<Resolved> {
    match device {
        DeviceChoice::Cpu => Ok(Resolved::Cpu(CpuBackend::new(threads))),
        DeviceChoice::Cuda(n) => open_cuda(n).map(Resolved::Cuda),
        DeviceChoice::Emu => Ok(Resolved::Emu(EmuBackend::emulated())),
        DeviceChoice::Auto => match CudaDevice::open(0) {
            Ok(d) => {
                let k = CudaBackend::new(d);
                eprintln!("device: {} (auto: a usable GPU was found)", k.name());
                Ok(Resolved::Cuda(k))
            }
            Err(why) => {
                let k = CpuBackend::new(threads);
                eprintln!("device: {} (auto: no usable GPU: {why})", k.name());
                Ok(Resolved::Cpu(k))
            }
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
}

impl ComputeArgs {
    /// The backend `--device` names (see [`resolve`]), said on stderr.
    pub fn resolve(&self) -> Result<Resolved> {
        let r = resolve(self.device, self.threads)?;
        if self.device != DeviceChoice::Auto {
            // `auto` has said what it picked and why.
            eprintln!("device: {}", r.name());
        }
        Ok(r)
    }
}

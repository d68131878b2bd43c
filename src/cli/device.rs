//! `--device` and `--threads`: which backend a command runs on.

use crate::backend::cpu::CpuBackend;
use crate::error::{Error, Result};

/// Where to compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    /// A GPU if one is usable, else the CPU.
    Auto,
    /// The multi-threaded f32 CPU backend.
    Cpu,
    /// An NVIDIA GPU.
    Cuda,
}

/// The CPU backend for `--device`, saying what `auto` picked and why.
pub fn cpu_backend(device: Device, threads: Option<usize>) -> Result<CpuBackend> {
    match device {
        Device::Cpu => Ok(CpuBackend::new(threads)),
        Device::Auto => {
            let k = CpuBackend::new(threads);
            eprintln!("device: {} (auto: this build has no CUDA backend yet)", crate::backend::Backend::name(&k));
            Ok(k)
        }
        Device::Cuda => {
            Err(Error::Invalid("--device cuda: this build has no CUDA backend yet; use --device cpu".into()))
        }
    }
}

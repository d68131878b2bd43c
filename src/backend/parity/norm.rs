//! Parity cases of the GPT-2 layer ops on a kernel device: layer norm and the fused cross-entropy.

use super::Report;
use crate::backend::device::Device;
use crate::backend::kernel_backend::KernelBackend;

/// Every case of this family; none yet (the ops have no kernels).
pub(super) fn cases<D: Device>(_k: &KernelBackend<D>, _seed: u64, _rep: &mut Report) {}

//! Parity cases of the GPT-2 layer ops on a kernel device: embeddings, GELU, bias gradients, AdamW, global norm, scale.

use super::Report;
use crate::backend::device::Device;
use crate::backend::kernel_backend::KernelBackend;

/// Every case of this family; none yet (the ops have no kernels).
pub(super) fn cases<D: Device>(_k: &KernelBackend<D>, _seed: u64, _rep: &mut Report) {}

//! The op set every model and loss is written against, and its implementations.
//!
//! One op family (layer norm, attention, GRN, the policy loss …) lives in four places under
//! one name: the CUDA source `kernels/<family>.cu`, the CPU oracle [`cpu`]`/<family>.rs`, the
//! checked kernel ops [`kernel`]`/<family>.rs` (unsafe launchers first, then the family's
//! trait implementation), and the parity cases `selftest/<family>.rs`. The family's trait is
//! in [`ops`]; the shapes and settings its ops take are in [`shapes`] (layer ops),
//! [`policy_loss`], [`advantage`] and [`sampling`].
//!
//! Below the op set: [`launch`] (device pointers, argument lists, launch configurations and
//! the launcher trait) and [`device`] (what a kernel-running device provides), shared by the
//! two devices, the real GPU ([`cuda`]) and the host emulator ([`emu`]). Nothing here imports
//! from the layers above (model, rl, rollout); only `util` and the error type lie below.

pub mod advantage;
pub mod cpu;
pub mod cuda;
pub mod device;
pub mod emu;
pub mod kernel;
pub mod launch;
pub mod ops;
pub mod policy_loss;
pub mod precision;
pub mod sampling;
pub mod shapes;

pub use advantage::{AdvantageParams, AdvantageScaling, GroupOffsets};
pub use ops::{
    AdvantageOps, AttentionOps, Backend, CrossEntropyOps, EncoderOps, GeluOps, GrnOps, LayerNormOps, LogprobOps,
    MatmulOps, MemoryOps, MemoryUse, OptimOps, PolicyLossOps, SamplingOps,
};
pub use policy_loss::{policy_metric, IsLevel, KlEstimator, LossType, PolicyLossInputs, PolicyLossParams};
pub use precision::{Dtype, MatmulPrecision, Precision};
pub use sampling::{SampleError, SampleParams, Sampled};
pub use shapes::{
    AdamWStep, Affine, AttentionShape, Btc, CachedShape, CrossEntropyShape, Gemm, GrnCausalStats, GrnParams,
    GrnSeqStats, GrnShape, GrnStepShape, KvBufs, LayerNormShape, LnStats, LogprobChunk, Masked, RowsC,
};

/// Every op-family trait, for calling ops on a concrete backend (`CpuBackend`,
/// `EmuBackend`): `use gepa_dapo_grn::backend::prelude::*;`. Generic code bound by
/// `B: Backend` needs no import.
pub mod prelude {
    pub use super::ops::{
        AdvantageOps, AttentionOps, Backend, CrossEntropyOps, EncoderOps, GeluOps, GrnOps, LayerNormOps, LogprobOps,
        MatmulOps, MemoryOps, OptimOps, PolicyLossOps, SamplingOps,
    };
}

//! The DAPO / GRPO objective: golden values from PyTorch (TRL's loss definitions) and from
//! TRL's own `_compute_loss`, finite differences of its two ops, chunk-size invariance and bad
//! inputs, per backend (see `test_backends!`): the policy-loss kernel is held to TRL's
//! references and to central differences exactly as the CPU oracle is.

#[macro_use]
mod common;

use common::objective;

test_backends!(objective: golden, chunk_invariance, logprob_gradcheck, policy_loss_gradcheck, trl_golden, bad_inputs);

/// bf16 mixed precision against PyTorch with the same roundings (`cases_bf16`), on the
/// emulator and on a GPU at `--dtype bf16` when there is one.
mod bf16 {
    use super::*;

    #[test]
    fn emulated() {
        objective::golden_bf16(gepa_dapo_grn::backend::kernel::EmuBackend::emulated_bf16());
    }

    #[test]
    fn cuda() {
        if let Some(k) = common::gpu_at(gepa_dapo_grn::backend::Precision::BF16) {
            objective::golden_bf16(k);
        }
    }
}

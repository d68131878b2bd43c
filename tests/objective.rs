//! The DAPO / GRPO objective: golden values from PyTorch (TRL's loss definitions) and from
//! TRL's own `_compute_loss`, finite differences of its two ops, chunk-size invariance and bad
//! inputs, per backend (see `test_backends!`): the policy-loss kernel is held to TRL's
//! references and to central differences exactly as the CPU oracle is.

#[macro_use]
mod common;

use common::objective;

test_backends!(objective: golden, chunk_invariance, logprob_gradcheck, policy_loss_gradcheck, trl_golden, bad_inputs);

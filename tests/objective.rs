//! The DAPO / GRPO objective: golden values from PyTorch (TRL's loss definitions) and from
//! TRL's own `_compute_loss`, finite differences of its two ops, chunk-size invariance and bad
//! inputs, per backend.

mod common;

use common::objective;
use gepa_dapo_grn::backend::cpu::CpuBackend;
use gepa_dapo_grn::backend::kernel_backend::EmuBackend;

/// Instantiates each shared test body for one backend.
macro_rules! objective_tests {
    ($modname:ident, $backend:expr) => {
        mod $modname {
            use super::*;
            #[test]
            fn golden() {
                objective::golden($backend);
            }
            #[test]
            fn chunk_invariance() {
                objective::chunk_invariance($backend);
            }
            #[test]
            fn logprob_gradcheck() {
                objective::logprob_gradcheck($backend);
            }
            #[test]
            fn policy_loss_gradcheck() {
                objective::policy_loss_gradcheck($backend);
            }
            #[test]
            fn trl_golden() {
                objective::trl_golden($backend);
            }
            #[test]
            fn bad_inputs() {
                objective::bad_inputs($backend);
            }
        }
    };
}

objective_tests!(cpu, CpuBackend::new(Some(2)));
// The same bodies on the kernel backend under the host emulator: the policy-loss kernel
// against TRL's references and central differences, as the CPU oracle is.
objective_tests!(emulated, EmuBackend::emulated());

//! Finite-difference gradient checks of every differentiable op, per backend: the CPU oracle
//! and the kernels on the emulated device.

mod common;

use common::gradcheck;
use gepa_dapo_grn::backend::cpu::CpuBackend;
use gepa_dapo_grn::backend::kernel_backend::EmuBackend;

/// Instantiates each shared test body for one backend.
macro_rules! gradcheck_tests {
    ($modname:ident, $backend:expr) => {
        mod $modname {
            use super::*;
            #[test]
            fn layernorm() {
                gradcheck::layernorm($backend);
            }
            #[test]
            fn attention() {
                gradcheck::attention($backend);
            }
            #[test]
            fn gelu() {
                gradcheck::gelu($backend);
            }
            #[test]
            fn cross_entropy() {
                gradcheck::cross_entropy($backend);
            }
            #[test]
            fn matmul() {
                gradcheck::matmul($backend);
            }
            #[test]
            fn encoder() {
                gradcheck::encoder($backend);
            }
            #[test]
            fn grn_causal() {
                gradcheck::grn_causal($backend);
            }
            #[test]
            fn grn_sequence() {
                gradcheck::grn_sequence($backend);
            }
        }
    };
}

gradcheck_tests!(cpu, CpuBackend::new(Some(2)));
gradcheck_tests!(emu, EmuBackend::emulated());

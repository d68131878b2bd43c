//! Finite-difference gradient checks of every differentiable op, per backend.

mod common;

use common::gradcheck;
use gepa_dapo_grn::backend::cpu::CpuBackend;

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
        }
    };
}

gradcheck_tests!(cpu, CpuBackend::new(Some(2)));

//! Finite-difference gradient checks of every differentiable op, per backend (see
//! `test_backends!`): the CPU oracle, the kernels on the emulated device in f32 and with TF32
//! matmuls, and a GPU when one is present.

#[macro_use]
mod common;

use common::gradcheck;

test_backends!(gradcheck: layernorm, attention, gelu, cross_entropy, matmul, encoder, grn_causal, grn_sequence);

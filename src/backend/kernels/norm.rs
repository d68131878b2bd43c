//! Launch wrappers of the GPT-2 layer kernels: layer norm and the fused cross-entropy.

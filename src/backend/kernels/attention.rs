//! Launch wrappers of the GPT-2 layer kernels: causal attention forward/backward and KV-cache attention.

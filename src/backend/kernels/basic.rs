//! Launch wrappers of the GPT-2 layer kernels: embeddings, GELU, bias gradients, AdamW, global norm, scale.

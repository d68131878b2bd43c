// The optimizer's kernels: the device form of `backend::cpu::optim`.
// Shapes: N values of a parameter buffer.
#include "common.cuh"

// One AdamW step in place, PyTorch's formula as the oracle writes it: g' = g * grad_scale,
// m = b1 m + (1-b1) g', v = b2 v + (1-b2) g'^2, p -= lr*wd*p (decoupled decay, before the
// step), p -= lr * (m/bc1) / (sqrt(v/bc2) + eps). bc1 = 1 - b1^step and bc2 = 1 - b2^step come
// from the host, computed exactly as the oracle computes them, so the kernel needs no pow.
// Elementwise, grid-stride.
extern "C" __global__ void adamw_f32(float* param, const float* grad, float* m, float* v, long long N, float lr,
                                     float beta1, float beta2, float eps, float weight_decay, float bc1, float bc2,
                                     float grad_scale) {
    const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
    for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < N; i += stride) {
        const float g = grad[i] * grad_scale;
        const float mi = beta1 * m[i] + (1.0f - beta1) * g;
        const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        const float mhat = mi / bc1;
        const float vhat = vi / bc2;
        float p = param[i];
        p -= lr * weight_decay * p;
        p -= lr * mhat / (sqrtf(vhat) + eps);
        param[i] = p;
    }
}

// Global norm, part 1: partial[blockIdx.x] = sum of x^2 over the elements this block visits
// (grid-stride), in f32 with a block reduction. 1-D blocks, a multiple of 32 threads.
extern "C" __global__ void global_norm_partial_f32(float* partial, const float* x, long long N) {
    const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
    float s = 0.0f;
    for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < N; i += stride) {
        const float v = x[i];
        s += v * v;
    }
    s = block_reduce_sum(s);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// Global norm, part 2: out[0] = sqrt(sum of the P partials) by one block (grid 1). The
// partials' layout depends only on the buffer sizes, so the result is deterministic.
extern "C" __global__ void global_norm_final_f32(float* out, const float* partial, int P) {
    float s = 0.0f;
    for (int i = threadIdx.x; i < P; i += blockDim.x) s += partial[i];
    s = block_reduce_sum(s);
    if (threadIdx.x == 0) out[0] = sqrtf(s);
}

// x *= alpha, elementwise, grid-stride.
extern "C" __global__ void scale_f32(float* x, long long N, float alpha) {
    const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
    for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < N; i += stride) x[i] *= alpha;
}

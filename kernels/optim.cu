// The optimizer's kernels and the bias gradient: the device form of `backend::cpu::optim`.
// Shapes: N values of a parameter buffer; (rows, cols) for the bias gradient.
#include "common.cuh"

// Threads per block of bias_backward_f32: 32 columns (one warp-wide, coalesced row segment)
// by BIAS_ROW_GROUPS row groups.
#define BIAS_ROW_GROUPS 8

// dbias[c] += sum_r dout[r, c]. One block per 32 columns (grid ceil(cols/32)), block of
// 32 x BIAS_ROW_GROUPS threads: lane l owns column 32*blockIdx.x + l, warp w sums rows w,
// w + 8, ... (a warp reads 32 consecutive floats of one row: coalesced). The 8 partial sums of a
// column are then added in warp order from shared memory, so the result is deterministic (no
// atomics); it differs from the oracle's row-order sum only by f32 rounding.
extern "C" __global__ void bias_backward_f32(float* dbias, const float* dout, int rows, int cols) {
    __shared__ float part[BIAS_ROW_GROUPS][WARP_SIZE];
    const int lane = threadIdx.x % WARP_SIZE;
    const int grp = threadIdx.x / WARP_SIZE;
    const int c = blockIdx.x * WARP_SIZE + lane;
    float s = 0.0f;
    if (c < cols) {
        for (int r = grp; r < rows; r += BIAS_ROW_GROUPS) s += dout[static_cast<long long>(r) * cols + c];
    }
    part[grp][lane] = s;
    __syncthreads();  // every group's partial is read by group 0 below
    if (grp == 0 && c < cols) {
        float total = 0.0f;
        for (int g = 0; g < BIAS_ROW_GROUPS; ++g) total += part[g][lane];
        dbias[c] += total;
    }
}

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

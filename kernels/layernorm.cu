// Layer norm over the channel axis, forward and backward: the device form of the CPU
// `layernorm_forward/backward` ops (src/backend/cpu/layernorm.rs, the oracle). Shapes: N rows
// of C channels; mean and rstd hold one value per row.
//
// Forward: one block per row (grid (N,1,1), 1-D block, a multiple of 32 threads); threads
// stride over C. The variance is a second pass over the row, Σ(x − mean)², as in the oracle:
// the one-pass E[x²] − mean² cancels catastrophically for rows with a large mean.
//
// Backward: dinp += per row, dw/dbias += Σ over rows. Summing the parameter gradients with
// atomicAdd would make N·C atomics onto the same C addresses (N ≈ B·T in the thousands): heavy
// contention, and a result whose rounding depends on scheduling. Instead a grid of G blocks
// takes rows g, g+G, g+2G, ...; each block keeps its (dw, dbias) sums for all C channels in
// dynamic shared memory (channel j is only ever touched by thread j % blockDim.x, so no atomics
// or barriers are needed for them) and writes them to a (G, 2C) workspace; then
// layernorm_param_grad_f32 adds the G partials in order: deterministic, two cheap launches.
#include "common.cuh"

// The output (the next GEMM's input) is stored as TO, f32 or bf16; the input (the residual
// stream), the parameters and the statistics are f32.
template <typename TO>
__device__ void layernorm_forward(TO* out, float* mean, float* rstd, const float* inp, const float* w,
                                  const float* bias, int N, int C, float eps) {
    const int r = blockIdx.x;
    if (r >= N) return;  // uniform across the block
    const float* x = inp + static_cast<long long>(r) * C;
    TO* o = out + static_cast<long long>(r) * C;
    float s = 0.0f;
    for (int j = threadIdx.x; j < C; j += blockDim.x) s += x[j];
    const float m = block_reduce_sum(s) / static_cast<float>(C);
    float v = 0.0f;
    for (int j = threadIdx.x; j < C; j += blockDim.x) {
        const float d = x[j] - m;
        v += d * d;
    }
    const float var = block_reduce_sum(v) / static_cast<float>(C);
    // 1/sqrtf rather than rsqrtf: rsqrtf is an approximation (2 ulp), sqrtf and the division
    // are correctly rounded, as the oracle's are.
    const float rs = 1.0f / sqrtf(var + eps);
    for (int j = threadIdx.x; j < C; j += blockDim.x) store(o + j, (x[j] - m) * rs * w[j] + bias[j]);
    if (threadIdx.x == 0) {
        mean[r] = m;
        rstd[r] = rs;
    }
}

extern "C" __global__ void layernorm_forward_f32(float* out, float* mean, float* rstd, const float* inp,
                                                 const float* w, const float* bias, int N, int C, float eps) {
    layernorm_forward(out, mean, rstd, inp, w, bias, N, C, eps);
}
extern "C" __global__ void layernorm_forward_bf16(bf16_t* out, float* mean, float* rstd, const float* inp,
                                                  const float* w, const float* bias, int N, int C, float eps) {
    layernorm_forward(out, mean, rstd, inp, w, bias, N, C, eps);
}

// Backward, part 1: dinp += rstd·(g − mean_C(g) − x̂·mean_C(g·x̂)) with x̂ = (x − mean)·rstd and
// g = dout·w, for the rows of this block; partial[blockIdx.x, j] = Σ_rows dout·x̂ (dw) and
// partial[blockIdx.x, C + j] = Σ_rows dout (dbias). Dynamic shared memory: 2·C floats.
extern "C" __global__ void layernorm_backward_f32(float* dinp, float* partial, const float* dout,
                                                  const float* inp, const float* w, const float* mean,
                                                  const float* rstd, int N, int C) {
    DYNAMIC_SHARED(float, acc);
    float* acc_w = acc;
    float* acc_b = acc + C;
    // Each thread zeroes and later reads only its own channels, so no barrier is needed here.
    for (int j = threadIdx.x; j < C; j += blockDim.x) {
        acc_w[j] = 0.0f;
        acc_b[j] = 0.0f;
    }
    const float inv_c = 1.0f / static_cast<float>(C);
    // The loop bound is the same for the whole block, so every thread reaches every reduction.
    for (int r = blockIdx.x; r < N; r += gridDim.x) {
        const long long off = static_cast<long long>(r) * C;
        const float* x = inp + off;
        const float* dy = dout + off;
        float* dx = dinp + off;
        const float m = mean[r], rs = rstd[r];
        float sg = 0.0f, sgx = 0.0f;
        for (int j = threadIdx.x; j < C; j += blockDim.x) {
            const float g = dy[j] * w[j];
            const float xhat = (x[j] - m) * rs;
            sg += g;
            sgx += g * xhat;
            acc_w[j] += dy[j] * xhat;
            acc_b[j] += dy[j];
        }
        const float g_mean = block_reduce_sum(sg) * inv_c;
        const float gx_mean = block_reduce_sum(sgx) * inv_c;
        for (int j = threadIdx.x; j < C; j += blockDim.x) {
            const float xhat = (x[j] - m) * rs;
            dx[j] += rs * (dy[j] * w[j] - g_mean - xhat * gx_mean);
        }
    }
    float* pb = partial + static_cast<long long>(blockIdx.x) * 2 * C;
    for (int j = threadIdx.x; j < C; j += blockDim.x) {
        pb[j] = acc_w[j];
        pb[C + j] = acc_b[j];
    }
}

// Backward, part 2: dw[j] += Σ_g partial[g, j], dbias[j] += Σ_g partial[g, C + j], summed over
// g in order (deterministic). One thread per channel; consecutive threads read consecutive
// addresses of each partial row.
extern "C" __global__ void layernorm_param_grad_f32(float* dw, float* dbias, const float* partial, int G, int C) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= C) return;
    float sw = 0.0f, sb = 0.0f;
    for (int g = 0; g < G; ++g) {
        const float* pg = partial + static_cast<long long>(g) * 2 * C;
        sw += pg[j];
        sb += pg[C + j];
    }
    dw[j] += sw;
    dbias[j] += sb;
}

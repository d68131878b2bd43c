// Fused log-softmax gather + entropy over vocabulary rows, forward and backward: the device form
// of the CPU `logprob_entropy_forward/backward` ops (src/backend/cpu/logprob.rs, the oracle).
// A chunk of `rows` rows of a (rows, V) logits buffer; row r is row row0 + r of the per-token
// buffers (targets, logp, entropy, dlogp, dentropy, each N long). With z = inv_t*x,
// m = max z, s = sum e^(z-m), u = sum e^(z-m)(z-m): logp = z_target - m - ln s, H = ln s - u/s.
// The normalised (rows, V) matrix is never written; the backward overwrites the logits with
// dx_j = inv_t * p_j * (-dlogp - dH*(log p_j + H)) + inv_t*dlogp*[j == target].
//
// One block per row (grid (rows,1,1), 1-D block, a multiple of 32 threads), no dynamic shared
// memory. Each thread keeps an online (m, s, u) over its strided columns (one read of the row),
// rescaled to the block maximum and summed with block reductions.
#include "common.cuh"

// Row statistics (m, ln s, H) of z = inv_t * row; every thread of the block gets them.
__device__ __forceinline__ void row_stats(const float* row, int V, float inv_t, float* m_out, float* ln_s_out,
                                          float* h_out) {
    const float neg_inf = -__uint_as_float(0x7f800000u);
    float m = neg_inf, s = 0.0f, u = 0.0f;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        const float z = row[j] * inv_t;
        if (z > m) {
            // Rescale (s, u) from max m to max z: u' = e^(m-z) (u + (m-z) s).
            const float sh = m - z;
            const float f = s > 0.0f ? expf(sh) : 0.0f;
            u = s > 0.0f ? f * (u + sh * s) : 0.0f;
            s = f * s + 1.0f;  // the new element contributes e^0 = 1 and 0 to u
            m = z;
        } else {
            const float d = z - m;
            const float e = expf(d);
            s += e;
            u += e * d;
        }
    }
    const float M = block_reduce_max(m);
    float sc = 0.0f, uc = 0.0f;
    if (s > 0.0f) {
        const float sh = m - M;
        const float f = expf(sh);
        sc = f * s;
        uc = f * (u + sh * s);
    }
    const float S = block_reduce_sum(sc);
    const float U = block_reduce_sum(uc);
    const float ln_s = logf(S);
    *m_out = M;
    *ln_s_out = ln_s;
    *h_out = ln_s - U / S;
}

extern "C" __global__ void logprob_entropy_forward_f32(float* logp, float* entropy, const float* logits,
                                                       const unsigned int* targets, int row0, int rows, int V,
                                                       float inv_t) {
    const int r = blockIdx.x;
    if (r >= rows) return;  // uniform across the block
    const float* row = logits + static_cast<long long>(r) * V;
    float m, ln_s, h;
    row_stats(row, V, inv_t, &m, &ln_s, &h);
    if (threadIdx.x == 0) {
        const unsigned int t = targets[row0 + r];
        entropy[row0 + r] = h;
        logp[row0 + r] = t < static_cast<unsigned int>(V) ? row[t] * inv_t - m - ln_s : __uint_as_float(0x7fc00000u);
    }
}

extern "C" __global__ void logprob_entropy_backward_f32(float* logits, const unsigned int* targets,
                                                        const float* dlogp, const float* dentropy, int row0,
                                                        int rows, int V, float inv_t) {
    const int r = blockIdx.x;
    if (r >= rows) return;
    float* row = logits + static_cast<long long>(r) * V;
    const unsigned int t = targets[row0 + r];
    const float gl = dlogp[row0 + r], gh = dentropy[row0 + r];
    // Both conditions are per row, so the whole block takes the same branch.
    if (t >= static_cast<unsigned int>(V)) {
        for (int j = threadIdx.x; j < V; j += blockDim.x) row[j] = __uint_as_float(0x7fc00000u);
        return;
    }
    if (gl == 0.0f && gh == 0.0f) {
        for (int j = threadIdx.x; j < V; j += blockDim.x) row[j] = 0.0f;
        return;
    }
    float m, ln_s, h;
    row_stats(row, V, inv_t, &m, &ln_s, &h);
    const float a = -gl - gh * h;
    // Each thread overwrites exactly the columns it read, so no barrier is needed.
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        const float lp = row[j] * inv_t - m - ln_s;
        float d = inv_t * expf(lp) * (a - gh * lp);
        if (j == static_cast<int>(t)) d += inv_t * gl;
        row[j] = d;
    }
}

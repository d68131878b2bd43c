// GRN (ConvNeXt V2 form) over the sequence axis of a (B,T,C) hidden state, padding-aware:
// the device version of `model::grn::grn_forward` / `grn_backward` (the oracle). Shapes:
// B sequences, T positions, C channels; x, out, dy, dx are (B,T,C) row-major, mask (B,T)
// (any non-zero value is a real position), gamma/beta/dgamma/dbeta (C), g/n (B,C), mean (B).
//
// One block per sequence (grid (B,1,1), 1-D block, a multiple of 32 threads, no dynamic shared
// memory); thread i owns channels i, i + blockDim.x, ... and walks T for them, so the loads of a
// position are coalesced across the block. Sums run in f32 (the oracle sums squares in f64:
// the results agree to f32 rounding of a T-term sum; an f32 sum of squares overflows where
// the f64 one would not, for |x| above ~1e19, which no hidden state reaches).
#include "common.cuh"

// Forward: writes out, g = ||x[b,:,c]||_2 over real t, mean[b] = mean_c g, n = g/(mean+eps)
// (0 when mean+eps == 0). Real outputs are a*x - (0 - beta) with a = 1 + gamma*n, so
// gamma = beta = 0 reproduces x bit for bit (-0.0 included); padding rows copy x.
extern "C" __global__ void grn_forward_f32(float* out, float* g, float* mean, float* n, const float* x,
                                           const float* mask, const float* gamma, const float* beta, int B,
                                           int T, int C, float eps) {
    const int b = blockIdx.x;
    if (b >= B) return;  // uniform across the block
    const long long base = static_cast<long long>(b) * T * C;
    const float* xb = x + base;
    const float* mb = mask + static_cast<long long>(b) * T;
    float norm_sum = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float ss = 0.0f;
        for (int t = 0; t < T; ++t) {
            if (mb[t] != 0.0f) {
                const float v = xb[static_cast<long long>(t) * C + c];
                ss += v * v;
            }
        }
        const float nrm = sqrtf(ss);
        g[static_cast<long long>(b) * C + c] = nrm;
        norm_sum += nrm;
    }
    const float mu = block_reduce_sum(norm_sum) / static_cast<float>(C);
    const float d = mu + eps;
    if (threadIdx.x == 0) mean[b] = mu;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        const long long i = static_cast<long long>(b) * C + c;
        n[i] = d > 0.0f ? g[i] / d : 0.0f;  // g[i] was written by this thread
    }
    __syncthreads();  // n[b,:] is read below by every thread
    const float* nb = n + static_cast<long long>(b) * C;
    float* ob = out + base;
    for (long long i = threadIdx.x; i < static_cast<long long>(T) * C; i += blockDim.x) {
        const int t = static_cast<int>(i / C);
        const int c = static_cast<int>(i - static_cast<long long>(t) * C);
        if (mb[t] != 0.0f) {
            const float a = 1.0f + gamma[c] * nb[c];
            const float neg_beta = 0.0f - beta[c];
            ob[i] = a * xb[i] - neg_beta;
        } else {
            ob[i] = xb[i];
        }
    }
}

// Backward, part 1: overwrites dx and writes per-sequence partials (B, 2C): partial[b, c] =
// N[b,c]*S[b,c] (this sequence's dgamma) and partial[b, C + c] = sum_t dy (its dbeta), with
// S_c = sum over real t of dy*x. Then grn_param_grad_f32 sums them over b in order, so the
// parameter gradients are deterministic (no atomics). Same launch as the forward.
extern "C" __global__ void grn_backward_f32(float* dx, float* partial, const float* dy, const float* x,
                                            const float* mask, const float* gamma, const float* g,
                                            const float* mean, const float* n, int B, int T, int C, float eps) {
    const int b = blockIdx.x;
    if (b >= B) return;
    const long long base = static_cast<long long>(b) * T * C;
    const float* xb = x + base;
    const float* dyb = dy + base;
    const float* mb = mask + static_cast<long long>(b) * T;
    const float* gb = g + static_cast<long long>(b) * C;
    const float* nb = n + static_cast<long long>(b) * C;
    float* pb = partial + static_cast<long long>(b) * 2 * C;
    float k_part = 0.0f;  // this thread's share of sum_k gamma_k * S_k * G_k
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float s = 0.0f, sb = 0.0f;
        for (int t = 0; t < T; ++t) {
            if (mb[t] != 0.0f) {
                const long long i = static_cast<long long>(t) * C + c;
                s += dyb[i] * xb[i];
                sb += dyb[i];
            }
        }
        pb[c] = s;  // S for now; turned into N*S below by this same thread
        pb[C + c] = sb;
        k_part += gamma[c] * s * gb[c];
    }
    const float k = block_reduce_sum(k_part);
    const float d = mean[b] + eps;
    const float kc = k / (static_cast<float>(C) * d * d);
    float* dxb = dx + base;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        const float s = pb[c];
        const float gc = gb[c];
        const float coef = gc > 0.0f ? (gamma[c] * s / d - kc) / gc : 0.0f;
        const float a = 1.0f + gamma[c] * nb[c];
        for (int t = 0; t < T; ++t) {
            const long long i = static_cast<long long>(t) * C + c;
            dxb[i] = mb[t] != 0.0f ? a * dyb[i] + coef * xb[i] : dyb[i];
        }
        pb[c] = nb[c] * s;
    }
}

// Backward, part 2: dgamma[c] += sum_b partial[b, c], dbeta[c] += sum_b partial[b, C + c],
// summed over b in order. Grid covering C threads (1-D), any block size.
extern "C" __global__ void grn_param_grad_f32(float* dgamma, float* dbeta, const float* partial, int B, int C) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float sg = 0.0f, sb = 0.0f;
    for (int b = 0; b < B; ++b) {
        const float* pb = partial + static_cast<long long>(b) * 2 * C;
        sg += pb[c];
        sb += pb[C + c];
    }
    dgamma[c] += sg;
    dbeta[c] += sb;
}

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

// ---- Causal form (in front of the policy head) -------------------------------------------------
// The device version of `model::grn::causal`: position t's statistic is over the prefix s <= t
// of its sequence, so x, out, dy, dx, g are (B,T,C), mean (B,T), and there is no mask (batches
// are right-padded; a padded tail cannot reach an earlier position). Row-wise kernels see the
// (B,T,C) tensor as R = B*T rows of C.

// Prefix norms: thread (b, c) walks t in order, g[b,t,c] = sqrt(sum_{s<=t} x[b,s,c]^2) with an
// f32 running sum (the oracle's is f64). Grid covering B*C threads; consecutive threads take
// consecutive channels, so each step of t is a coalesced load.
extern "C" __global__ void grn_causal_norms_f32(float* g, const float* x, int B, int T, int C) {
    const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= static_cast<long long>(B) * C) return;
    const long long b = i / C;
    const long long c = i - b * C;
    const long long base = b * T * C + c;
    float ss = 0.0f;
    for (int t = 0; t < T; ++t) {
        const long long j = base + static_cast<long long>(t) * C;
        const float v = x[j];
        ss += v * v;
        g[j] = sqrtf(ss);
    }
}

// Row apply (forward and decode): one block per row r of C channels. mean[r] = mean_c g[r,:];
// out = a*x - (0 - beta) with a = 1 + gamma*n, n = g/(mean+eps) (0 when mean+eps == 0), so
// gamma = beta = 0 gives x bit for bit. 1-D block, a multiple of 32 threads.
extern "C" __global__ void grn_rows_apply_f32(float* out, float* mean, const float* g, const float* x,
                                              const float* gamma, const float* beta, int R, int C, float eps) {
    const int r = blockIdx.x;
    if (r >= R) return;  // uniform across the block
    const long long base = static_cast<long long>(r) * C;
    float part = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) part += g[base + c];
    const float mu = block_reduce_sum(part) / static_cast<float>(C);
    if (threadIdx.x == 0) mean[r] = mu;
    const float d = mu + eps;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        const float n = d > 0.0f ? g[base + c] / d : 0.0f;
        const float a = 1.0f + gamma[c] * n;
        const float neg_beta = 0.0f - beta[c];
        out[base + c] = a * x[base + c] - neg_beta;
    }
}

// Backward, part 1: one block per row (b,t): kc[row] = (sum_c gamma*dy*x*g) / (C*D^2) with
// D = mean[row] + eps (0 when D == 0): the share of every dL/dG of the row that flows through
// the mean.
extern "C" __global__ void grn_causal_coef_f32(float* kc, const float* dy, const float* x, const float* gamma,
                                               const float* g, const float* mean, int R, int C, float eps) {
    const int r = blockIdx.x;
    if (r >= R) return;
    const long long base = static_cast<long long>(r) * C;
    float part = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) part += gamma[c] * dy[base + c] * x[base + c] * g[base + c];
    const float k = block_reduce_sum(part);
    const float d = mean[r] + eps;
    if (threadIdx.x == 0) kc[r] = d > 0.0f ? k / (static_cast<float>(C) * d * d) : 0.0f;
}

// Backward, part 2: thread (b, c) walks t from T-1 down, carrying the suffix sum
// R = sum_{t' >= t} (gamma*dy*x/D - kc)/g over its channel, and writes
// dx = (1 + gamma*n)*dy + x*R (exactly a*dy where R == 0, so gamma = 0 passes dy through bit
// for bit), plus this sequence's partial dgamma = sum_t dy*x*n and dbeta = sum_t dy into
// partial (B, 2C), summed over b by grn_param_grad_f32. Grid covering B*C threads.
extern "C" __global__ void grn_causal_backward_f32(float* dx, float* partial, const float* dy, const float* x,
                                                   const float* gamma, const float* g, const float* mean,
                                                   const float* kc, int B, int T, int C, float eps) {
    const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= static_cast<long long>(B) * C) return;
    const long long b = i / C;
    const long long c = i - b * C;
    const long long base = b * T * C + c;
    const float gm = gamma[c];
    float suffix = 0.0f, pg = 0.0f, pb = 0.0f;
    for (int t = T - 1; t >= 0; --t) {
        const long long j = base + static_cast<long long>(t) * C;
        const long long row = b * T + t;
        const float d = mean[row] + eps;
        const float gv = g[j], xv = x[j], dv = dy[j];
        if (gv > 0.0f && d > 0.0f) suffix += (gm * dv * xv / d - kc[row]) / gv;
        const float n = d > 0.0f ? gv / d : 0.0f;
        pg += dv * xv * n;
        pb += dv;
        const float direct = (1.0f + gm * n) * dv;
        dx[j] = suffix != 0.0f ? direct + xv * suffix : direct;
    }
    partial[b * 2 * C + c] = pg;
    partial[b * 2 * C + C + c] = pb;
}

// Decode: thread c walks the R rows in order, adding x[r,c]^2 to the running sum of its
// sequence, sumsq[seq[r], c], and writing g[r,c] = sqrt of it; rows of one sequence are
// consecutive positions (a prefill) or one each (a decode step). A row whose seq is outside
// the cache's B sequences gets g = NaN (and so NaN outputs) instead of a write out of bounds.
// Grid covering C threads; then grn_rows_apply_f32 over the R rows.
extern "C" __global__ void grn_step_norms_f32(float* g, float* sumsq, const float* x, const unsigned int* seq,
                                              int R, int B, int C) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    for (int r = 0; r < R; ++r) {
        const long long j = static_cast<long long>(r) * C + c;
        const unsigned int s = seq[r];
        if (s >= static_cast<unsigned int>(B)) {
            g[j] = __uint_as_float(0x7fc00000u);  // NaN
            continue;
        }
        float* acc = sumsq + static_cast<long long>(s) * C + c;
        const float v = x[j];
        *acc += v * v;
        g[j] = sqrtf(*acc);
    }
}

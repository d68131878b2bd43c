// Weighted softmax cross-entropy over vocabulary rows, with the gradient written over the
// logits in the same launch: the device form of the CPU `cross_entropy` op
// (src/backend/cpu/cross_entropy.rs, the oracle). Shapes: N rows of V logits; targets,
// weights and losses hold one value per row.
//
// losses[i] = w[i]·(m + ln s − x[i][t]) with m = max_j x[i][j], s = Σ_j e^(x[i][j] − m); with
// `backward` != 0 the row is overwritten by w[i]·(e^(x − m)/s − onehot(t)). The normalised
// (N, V) matrix is never stored on its own.
//
// One block per row (grid (N,1,1), 1-D block, a multiple of 32 threads), no dynamic shared
// memory. Each thread keeps an online (max, Σe) over its strided columns, so the statistics
// take one read of the row; the backward reads it once more and writes it in place.
#include "common.cuh"

extern "C" __global__ void cross_entropy_f32(float* logits, float* losses, const unsigned int* targets,
                                             const float* weights, int N, int V, int backward) {
    const int r = blockIdx.x;
    if (r >= N) return;  // uniform across the block
    float* row = logits + static_cast<long long>(r) * V;
    const unsigned int t = targets[r];
    const float wr = weights[r];
    const float nan = __uint_as_float(0x7fc00000u);
    // A target outside the vocabulary has no loss: NaN loss and (backward) a NaN row, so the
    // bad id shows up instead of reading past the row. The branch is per row, so uniform.
    if (t >= static_cast<unsigned int>(V)) {
        if (threadIdx.x == 0) losses[r] = nan;
        if (backward)
            for (int j = threadIdx.x; j < V; j += blockDim.x) row[j] = nan;
        return;
    }
    // Read the target's logit before the reductions' barriers: in the backward another thread
    // overwrites it after them.
    const float xt = threadIdx.x == 0 ? row[t] : 0.0f;

    const float neg_inf = -__uint_as_float(0x7f800000u);
    float m = neg_inf, s = 0.0f;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        const float x = row[j];
        if (x > m) {
            // Rescale the sum from max m to the new max x; the new element contributes e^0 = 1.
            s = (s > 0.0f ? s * expf(m - x) : 0.0f) + 1.0f;
            m = x;
        } else {
            s += expf(x - m);
        }
    }
    const float M = block_reduce_max(m);
    const float sc = s > 0.0f ? s * expf(m - M) : 0.0f;  // threads without columns add 0
    const float S = block_reduce_sum(sc);
    if (threadIdx.x == 0) losses[r] = wr * (M + logf(S) - xt);
    if (backward) {
        const float inv = 1.0f / S;
        // Each thread overwrites exactly the columns it read, so no barrier is needed.
        for (int j = threadIdx.x; j < V; j += blockDim.x) {
            float d = wr * (expf(row[j] - M) * inv);
            if (j == static_cast<int>(t)) d -= wr;
            row[j] = d;
        }
    }
}

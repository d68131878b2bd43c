// Group-relative advantages over ragged groups, the f32 device form of
// `rl::advantage::group_advantages` (the f64 oracle). N rewards, G groups: group g is
// rewards[offsets[g] .. offsets[g+1]] (offsets (G+1), increasing, offsets[0] = 0,
// offsets[G] = N, no empty group). scaling: 0 = group std, 1 = batch std, 2 = none (Dr. GRPO).
// Standard deviations are unbiased (n - 1); one value has std 0. Means are x0 + mean(x - x0),
// so equal rewards give exactly 0. clip > 0 clips to [-clip, clip]; clip <= 0 disables it.
//
// One block (grid (1,1,1), 1-D block, a multiple of 32 threads): the batch statistics come
// from block reductions, then warp w handles groups w, w + warps, ... with warp reductions.
// A batch of RL rewards is small (hundreds to a few thousand), so one block is enough.
#include "common.cuh"

extern "C" __global__ void group_advantage_f32(float* out, const float* rewards, const int* offsets, int G, int N,
                                               int scaling, float eps, float clip) {
    float batch_std = 0.0f;
    if (scaling == 1 && N > 1) {
        const float x0 = rewards[0];
        float s = 0.0f;
        for (int i = threadIdx.x; i < N; i += blockDim.x) s += rewards[i] - x0;
        const float mean = x0 + block_reduce_sum(s) / static_cast<float>(N);
        float ss = 0.0f;
        for (int i = threadIdx.x; i < N; i += blockDim.x) {
            const float dv = rewards[i] - mean;
            ss += dv * dv;
        }
        batch_std = sqrtf(block_reduce_sum(ss) / static_cast<float>(N - 1));
    }
    const int lane = threadIdx.x % WARP_SIZE;
    const int warps = blockDim.x / WARP_SIZE;
    for (int grp = threadIdx.x / WARP_SIZE; grp < G; grp += warps) {  // uniform within a warp
        const int lo = offsets[grp], hi = offsets[grp + 1];
        const int n = hi - lo;
        const float x0 = rewards[lo];
        float s = 0.0f;
        for (int i = lo + lane; i < hi; i += WARP_SIZE) s += rewards[i] - x0;
        const float mean = x0 + warp_reduce_sum(s) / static_cast<float>(n);
        float ss = 0.0f;
        for (int i = lo + lane; i < hi; i += WARP_SIZE) {
            const float dv = rewards[i] - mean;
            ss += dv * dv;
        }
        ss = warp_reduce_sum(ss);
        const float std = n > 1 ? sqrtf(ss / static_cast<float>(n - 1)) : 0.0f;
        const float denom = scaling == 0 ? std + eps : batch_std + eps;
        for (int i = lo + lane; i < hi; i += WARP_SIZE) {
            const float centred = rewards[i] - mean;
            float a = (scaling != 2 && centred != 0.0f) ? centred / denom : centred;
            if (clip > 0.0f) a = fminf(fmaxf(a, -clip), clip);
            out[i] = a;
        }
    }
}

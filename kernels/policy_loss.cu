// The clipped-ratio policy loss with k3 KL and an entropy bonus, forward and gradient in one
// pass over S sequences x L tokens: the device form of the CPU `policy_loss` op
// (src/backend/cpu/policy_loss.rs, the oracle; semantics in DESIGN.md "RL semantics").
// All per-token buffers are (S, L) row-major, advantages (S).
//
// The aggregation weight of a token is w = m * c_i with c_i a per-sequence constant that, for
// bnpo/dapo, depends on the whole batch's mask sum. So:
//   1. policy_loss_partial_f32 (grid (S,1,1), one block per sequence): everything with c_i = 1
//      -- unscaled gradients into dlogp / dentropy, and the sequence's sums into partial (S, 16);
//   2. policy_loss_finalize_f32 (grid (1,1,1)): c_i into scale (S), the metrics buffer;
//      each metric is summed over sequences in order (deterministic, no atomics);
//   3. policy_loss_scale_f32 (1-D grid covering S*L): dlogp, dentropy *= c_i.
// Sums are f32 (the oracle's are f64). The KL uses expm1f, so e^d - d - 1 keeps its relative
// accuracy for small d.
#include "common.cuh"

// Columns of the per-sequence partial sums.
#define PL_CNT 0
#define PL_POLICY 1
#define PL_KL_LOSS 2
#define PL_ENT_LOSS 3
#define PL_KL 4
#define PL_ENT 5
#define PL_CLIP_LOW 6
#define PL_CLIP_HIGH 7
#define PL_RATIO 8
#define PL_RATIO_MIN 9
#define PL_RATIO_MAX 10
#define PL_BAD_LOGP 11
#define PL_BAD_OLD 12
#define PL_BAD_REF 13
#define PL_BAD_MASK 14
#define PL_BAD_ENT 15
#define PL_COLS 16

// Slots of the metrics buffer (backend::policy_metric).
#define PM_LOSS 0
#define PM_POLICY_LOSS 1
#define PM_KL_MEAN 2
#define PM_ENTROPY_MEAN 3
#define PM_CLIP_FRAC_LOW 4
#define PM_CLIP_FRAC_HIGH 5
#define PM_RATIO_MEAN 6
#define PM_RATIO_MIN 7
#define PM_RATIO_MAX 8
#define PM_MASK_SUM 9
#define PM_BAD_LOGP 10
#define PM_BAD_LOGP_OLD 11
#define PM_BAD_LOGP_REF 12
#define PM_BAD_ADVANTAGE 13
#define PM_BAD_MASK 14
#define PM_BAD_ENTROPY 15
#define PM_LEN 16

__device__ __forceinline__ bool pl_finite(float v) { return (__float_as_uint(v) & 0x7f800000u) != 0x7f800000u; }
// A usable mask weight: finite and non-negative.
__device__ __forceinline__ bool pl_good(float m) { return pl_finite(m) && m >= 0.0f; }

// level: 0 token, 1 sequence (GSPO). use_ref: 1 when beta != 0 and logp_ref is given.
extern "C" __global__ void policy_loss_partial_f32(float* dlogp, float* dentropy, float* partial, const float* logp,
                                                   const float* logp_old, const float* logp_ref,
                                                   const float* advantages, const float* entropy, const float* mask,
                                                   int S, int L, int level, float eps_low, float eps_high,
                                                   float beta, float entropy_coef, int use_ref) {
    const int i = blockIdx.x;
    if (i >= S) return;  // uniform across the block
    const long long base = static_cast<long long>(i) * L;
    const float* lp = logp + base;
    const float* lpo = logp_old + base;
    const float* ent = entropy + base;
    const float* mk = mask + base;
    float* dlp = dlogp + base;
    float* dh = dentropy + base;
    const float a = advantages[i];
    const float lo = 1.0f - eps_low, hi = 1.0f + eps_high;
    const float inf = __uint_as_float(0x7f800000u);

    float cnt = 0.0f, bad_mask = 0.0f, lr_sum = 0.0f;
    for (int t = threadIdx.x; t < L; t += blockDim.x) {
        const float m = mk[t];
        if (pl_good(m)) {
            cnt += m;
            if (m != 0.0f) lr_sum += m * (lp[t] - lpo[t]);
        } else {
            bad_mask += 1.0f;
        }
    }
    cnt = block_reduce_sum(cnt);
    bad_mask = block_reduce_sum(bad_mask);
    const float cnt1 = fmaxf(cnt, 1.0f);
    float seq_ratio = 1.0f;
    if (level == 1) seq_ratio = expf(block_reduce_sum(lr_sum) / cnt1);

    float policy = 0.0f, kl_loss = 0.0f, ent_loss = 0.0f, kl_sum = 0.0f, ent_sum = 0.0f;
    float clip_low = 0.0f, clip_high = 0.0f, ratio = 0.0f, rmin = inf, rmax = -inf;
    float bad_lp = 0.0f, bad_old = 0.0f, bad_ref = 0.0f, bad_ent = 0.0f, seq_grad = 0.0f;
    for (int t = threadIdx.x; t < L; t += blockDim.x) {
        const float m = mk[t];
        dlp[t] = 0.0f;
        dh[t] = 0.0f;
        if (!(m != 0.0f && pl_good(m))) continue;
        bad_lp += pl_finite(lp[t]) ? 0.0f : 1.0f;
        bad_old += pl_finite(lpo[t]) ? 0.0f : 1.0f;
        bad_ent += pl_finite(ent[t]) ? 0.0f : 1.0f;
        const float rho = level == 1 ? seq_ratio : expf(lp[t] - lpo[t]);
        const float surr = -fminf(rho * a, fminf(fmaxf(rho, lo), hi) * a);
        const bool clipped = (a > 0.0f && rho > hi) || (a < 0.0f && rho < lo);
        const float dsurr = clipped ? 0.0f : -rho * a;
        float g = 0.0f;
        if (level == 1) seq_grad += m * dsurr;
        else g += m * dsurr;
        policy += m * surr;
        if (use_ref) {
            const float lr = logp_ref[base + t];
            bad_ref += pl_finite(lr) ? 0.0f : 1.0f;
            const float d = lr - lp[t];
            const float em1 = expm1f(d);
            const float kl = em1 - d;
            kl_sum += m * kl;
            kl_loss += m * beta * kl;
            g += m * beta * (-em1);
        }
        ent_sum += m * ent[t];
        ent_loss -= m * entropy_coef * ent[t];
        dh[t] = -m * entropy_coef;
        dlp[t] = g;
        if (a < 0.0f && rho < lo) clip_low += m;
        if (a > 0.0f && rho > hi) clip_high += m;
        ratio += m * rho;
        rmin = fminf(rmin, rho);
        rmax = fmaxf(rmax, rho);
    }
    if (level == 1) {
        seq_grad = block_reduce_sum(seq_grad);
        if (seq_grad != 0.0f) {
            const float per = seq_grad / cnt1;
            // Each thread revisits only the tokens it wrote above.
            for (int t = threadIdx.x; t < L; t += blockDim.x) {
                const float m = mk[t];
                if (m != 0.0f && pl_good(m)) dlp[t] += per * m;
            }
        }
    }
    float* pr = partial + static_cast<long long>(i) * PL_COLS;
    const float v[PL_COLS] = {cnt,       policy,    kl_loss,   ent_loss, kl_sum, ent_sum, clip_low, clip_high,
                              ratio,     rmin,      rmax,      bad_lp,   bad_old, bad_ref, bad_mask, bad_ent};
    for (int k = 0; k < PL_COLS; ++k) {
        float r;
        if (k == PL_CNT || k == PL_BAD_MASK) r = v[k];  // already reduced
        else if (k == PL_RATIO_MIN) r = -block_reduce_max(-v[k]);
        else if (k == PL_RATIO_MAX) r = block_reduce_max(v[k]);
        else r = block_reduce_sum(v[k]);
        if (threadIdx.x == 0) pr[k] = r;
    }
}

// loss_type: 0 grpo, 1 bnpo / dapo, 2 dr_grpo. missing_ref: 1 when beta != 0 but no reference
// log-probs were given (BAD_LOGP_REF then reports S*L). One block, a multiple of 32 threads:
// thread k < 16 sums partial column k over the sequences in order; all threads write scale.
extern "C" __global__ void policy_loss_finalize_f32(float* metrics, float* scale, const float* partial,
                                                    const float* advantages, int S, int L, int loss_type,
                                                    int max_completion_length, int missing_ref) {
    __shared__ float total_s;
    if (threadIdx.x == 0) {
        float tot = 0.0f;
        for (int i = 0; i < S; ++i) tot += partial[static_cast<long long>(i) * PL_COLS + PL_CNT];
        total_s = tot;
    }
    __syncthreads();
    const float total = total_s;
    // c_i of every sequence.
    for (int i = threadIdx.x; i < S; i += blockDim.x) {
        const float cnt = partial[static_cast<long long>(i) * PL_COLS + PL_CNT];
        float c;
        if (loss_type == 0) c = 1.0f / (static_cast<float>(S) * fmaxf(cnt, 1.0f));
        else if (loss_type == 1) c = 1.0f / fmaxf(total, 1.0f);
        else c = 1.0f / (static_cast<float>(S) * static_cast<float>(max_completion_length > 1 ? max_completion_length : 1));
        scale[i] = c;
    }
    __syncthreads();
    const int k = threadIdx.x;
    const float inf = __uint_as_float(0x7f800000u);
    const float inv_total = total > 0.0f ? 1.0f / total : 0.0f;
    if (k == 0) {
        // The aggregated loss and surrogate: sum_i c_i * (sequence sums).
        float loss = 0.0f, pol = 0.0f;
        for (int i = 0; i < S; ++i) {
            const float* pr = partial + static_cast<long long>(i) * PL_COLS;
            loss += scale[i] * (pr[PL_POLICY] + pr[PL_KL_LOSS] + pr[PL_ENT_LOSS]);
            pol += scale[i] * pr[PL_POLICY];
        }
        metrics[PM_LOSS] = loss;
        metrics[PM_POLICY_LOSS] = pol;
        metrics[PM_MASK_SUM] = total;
        float bad_adv = 0.0f;
        for (int i = 0; i < S; ++i) bad_adv += pl_finite(advantages[i]) ? 0.0f : 1.0f;
        metrics[PM_BAD_ADVANTAGE] = bad_adv;
    } else if (k < PL_COLS && k != PL_POLICY && k != PL_KL_LOSS && k != PL_ENT_LOSS) {
        const bool is_min = k == PL_RATIO_MIN, is_max = k == PL_RATIO_MAX;
        float acc = is_min ? inf : (is_max ? -inf : 0.0f);
        for (int i = 0; i < S; ++i) {
            const float v = partial[static_cast<long long>(i) * PL_COLS + k];
            acc = is_min ? fminf(acc, v) : (is_max ? fmaxf(acc, v) : acc + v);
        }
        switch (k) {
            case PL_KL: metrics[PM_KL_MEAN] = acc * inv_total; break;
            case PL_ENT: metrics[PM_ENTROPY_MEAN] = acc * inv_total; break;
            case PL_CLIP_LOW: metrics[PM_CLIP_FRAC_LOW] = acc * inv_total; break;
            case PL_CLIP_HIGH: metrics[PM_CLIP_FRAC_HIGH] = acc * inv_total; break;
            case PL_RATIO: metrics[PM_RATIO_MEAN] = acc * inv_total; break;
            case PL_RATIO_MIN: metrics[PM_RATIO_MIN] = total > 0.0f ? acc : 0.0f; break;
            case PL_RATIO_MAX: metrics[PM_RATIO_MAX] = total > 0.0f ? acc : 0.0f; break;
            case PL_BAD_LOGP: metrics[PM_BAD_LOGP] = acc; break;
            case PL_BAD_OLD: metrics[PM_BAD_LOGP_OLD] = acc; break;
            case PL_BAD_REF: metrics[PM_BAD_LOGP_REF] = missing_ref ? static_cast<float>(S) * L : acc; break;
            case PL_BAD_MASK: metrics[PM_BAD_MASK] = acc; break;
            case PL_BAD_ENT: metrics[PM_BAD_ENTROPY] = acc; break;
            default: break;  // PL_CNT: the mask sum, written by thread 0
        }
    }
}

// dlogp, dentropy (S, L) *= scale[row]. 1-D grid covering S*L threads.
extern "C" __global__ void policy_loss_scale_f32(float* dlogp, float* dentropy, const float* scale, int S, int L) {
    const long long j = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (j >= static_cast<long long>(S) * L) return;
    const float c = scale[j / L];
    dlogp[j] *= c;
    dentropy[j] *= c;
}

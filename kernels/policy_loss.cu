// The GRPO-family policy loss (TRL 1.16's _compute_loss: clip family, cispo, sapo, vespo;
// delta, verl's dual clip and KL estimators, the entropy mask and bonus), forward and gradient
// in one pass over S sequences x L tokens: the device form of the CPU `policy_loss` op
// (src/backend/cpu/policy_loss.rs, the oracle, which states the semantics).
// All per-token buffers are (S, L) row-major, advantages (S).
//
// The gradient of a token's loss is c_i * m * (...) with c_i a per-sequence constant that, for
// bnpo/dapo/cispo/vespo, depends on the whole batch's mask sum; the entropy bonus's weight
// depends on the whole batch's entropy-masked mask sum. So:
//   1. policy_loss_partial_f32 (grid (S,1,1), one block per sequence): everything with c = 1
//      -- unscaled gradients into dlogp / dentropy, and the sequence's sums into partial
//      (S, PL_COLS);
//   2. policy_loss_finalize_f32 (grid (1,1,1)): c_i into scale (S), the entropy weight into
//      scale_h (S, the same value for every sequence), the metrics buffer; each metric is
//      summed over sequences in order (deterministic, no atomics);
//   3. policy_loss_scale_f32 (1-D grid covering S*L): dlogp *= scale[i], dentropy *= scale_h[i].
// Sums are f32 (the oracle's are f64). The k3 KL uses expm1f, so e^d - d - 1 keeps its relative
// accuracy for small d.
#include "common.cuh"

// Columns of the per-sequence partial sums.
#define PL_CNT 0         // sum of valid mask weights
#define PL_ECNT 1        // sum of m * e (entropy-masked weights)
#define PL_POLICY 2      // sum of m * e * p
#define PL_KL_LOSS 3     // sum of m * beta * K
#define PL_ENT_MASKED 4  // sum of m * e * H
#define PL_KL 5
#define PL_ENT 6
#define PL_CLIP_LOW 7  // token level: sum of m * flag; sequence level: the sequence's flag
#define PL_CLIP_HIGH 8
#define PL_DUAL 9
#define PL_RATIO 10
#define PL_RATIO_MIN 11
#define PL_RATIO_MAX 12
#define PL_BAD_LOGP 13
#define PL_BAD_OLD 14
#define PL_BAD_REF 15
#define PL_BAD_MASK 16
#define PL_BAD_ENT 17
#define PL_COLS 18

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
#define PM_DUAL_CLIP_FRAC 16
#define PM_LEN 17

// loss_type codes (src/backend/kernels/policy_loss.rs).
#define LT_GRPO 0
#define LT_BNPO 1
#define LT_DR_GRPO 2
#define LT_DAPO 3
#define LT_CISPO 4
#define LT_SAPO 5
#define LT_LUSPO 6
#define LT_VESPO 7

// kl_estimator codes.
#define KL_K1 1
#define KL_K2 2
#define KL_K3 3

__device__ __forceinline__ bool pl_finite(float v) { return (__float_as_uint(v) & 0x7f800000u) != 0x7f800000u; }
// A usable mask weight: finite and non-negative.
__device__ __forceinline__ bool pl_good(float m) { return pl_finite(m) && m >= 0.0f; }
// A mask weight that takes part in the loss.
__device__ __forceinline__ bool pl_on(float m) { return m != 0.0f && pl_good(m); }
__device__ __forceinline__ bool pl_clip_family(int lt) {
    return lt == LT_GRPO || lt == LT_BNPO || lt == LT_DR_GRPO || lt == LT_DAPO || lt == LT_LUSPO;
}

// The constants of the policy term.
struct PlConsts {
    int loss_type;
    float lo, hi, eps_high;
    int use_delta;
    float delta;
    int use_dual;
    float clip_c;
    float tau_pos, tau_neg;
};

// One token's policy term p (before the entropy mask): value, dp/drho, the direct dp/dlogp,
// and whether the dual clip's cap is what it took. Gradients as torch's: min passes to the
// smaller argument (half each on a tie), clamp inside its closed range, detached factors none.
struct PlTerm {
    float value, d_rho, d_logp;
    bool dual;
};

__device__ __forceinline__ PlTerm pl_policy_term(const PlConsts& k, float r, float a, float lp, float phi) {
    PlTerm out = {0.0f, 0.0f, 0.0f, false};
    if (pl_clip_family(k.loss_type)) {
        const float c2 = fminf(fmaxf(r, k.lo), k.hi);
        float rt = r, d_rt = 1.0f;
        if (k.use_delta && r > k.delta) {
            rt = k.delta;  // TRL's two-sided clipping: min(rho, delta)
            d_rt = 0.0f;
        }
        const float d_c2 = (r >= k.lo && r <= k.hi) ? 1.0f : 0.0f;
        const float v1 = rt * a, v2 = c2 * a;
        if (v1 < v2) {
            out.value = -v1;
            out.d_rho = -a * d_rt;
        } else if (v2 < v1) {
            out.value = -v2;
            out.d_rho = -a * d_c2;
        } else {
            out.value = -v1;
            out.d_rho = -a * 0.5f * (d_rt + d_c2);
        }
        if (k.use_dual && a < 0.0f) {
            // verl's dual clip: min(-A*c, p); the cap does not depend on rho.
            const float cap = -a * k.clip_c;
            if (out.value > cap) {
                out.value = cap;
                out.d_rho = 0.0f;
                out.dual = true;
            } else if (out.value == cap) {
                out.d_rho *= 0.5f;
            }
        }
    } else if (k.loss_type == LT_CISPO) {
        const float capped = fminf(r, k.eps_high);  // detached
        out.value = -capped * a * lp;
        out.d_logp = -capped * a;
    } else if (k.loss_type == LT_SAPO) {
        const float tau = a > 0.0f ? k.tau_pos : k.tau_neg;
        const float sig = 1.0f / (1.0f + expf(-tau * (r - 1.0f)));
        out.value = -sig * 4.0f / tau * a;
        out.d_rho = -4.0f * sig * (1.0f - sig) * a;
    } else {  // LT_VESPO: phi is the sequence's detached gamma weight
        out.value = -phi * a * lp;
        out.d_logp = -phi * a;
    }
    return out;
}

// The clip-fraction flags of a ratio: clip family on rho~ = min(rho, delta), cispo's high flag
// on rho; none for sapo / vespo.
__device__ __forceinline__ void pl_clip_flags(const PlConsts& k, float rho, float a, bool* low, bool* high) {
    *low = false;
    *high = false;
    if (pl_clip_family(k.loss_type)) {
        const float rt = k.use_delta ? fminf(rho, k.delta) : rho;
        *low = a < 0.0f && rt < k.lo;
        *high = a > 0.0f && rt > k.hi;
    } else if (k.loss_type == LT_CISPO) {
        *high = a > 0.0f && rho > k.eps_high;
    }
}

// level: 0 token, 1 sequence (GSPO). use_ref: 1 when beta != 0 and logp_ref is given.
// use_delta / use_dual: 1 when delta / clip_c are set. kl_est: KL_K1/K2/K3; bias_kl: 1 for
// TRL's use_bias_correction_kl. use_ent_mask: 1 when tokens with entropy < ent_threshold drop
// their policy term.
extern "C" __global__ void policy_loss_partial_f32(
    float* dlogp, float* dentropy, float* partial, const float* logp, const float* logp_old, const float* logp_ref,
    const float* advantages, const float* entropy, const float* mask, int S, int L, int level, int loss_type,
    float eps_low, float eps_high, int use_delta, float delta, int use_dual, float clip_c, float beta, int kl_est,
    int bias_kl, int use_ref, int use_ent_mask, float ent_threshold, float sapo_tau_pos, float sapo_tau_neg,
    float vespo_k_pos, float vespo_lambda_pos, float vespo_k_neg, float vespo_lambda_neg) {
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
    const PlConsts k = {loss_type,     1.0f - eps_low, 1.0f + eps_high, eps_high, use_delta,
                        delta,         use_dual,       clip_c,          sapo_tau_pos, sapo_tau_neg};
    const float inf = __uint_as_float(0x7f800000u);

    float cnt = 0.0f, ecnt = 0.0f, bad_mask = 0.0f, lr_sum = 0.0f, vespo_sum = 0.0f;
    for (int t = threadIdx.x; t < L; t += blockDim.x) {
        const float m = mk[t];
        if (pl_good(m)) {
            cnt += m;
            if (m != 0.0f) {
                const float lr = lp[t] - lpo[t];
                lr_sum += m * lr;
                vespo_sum += m * fminf(fmaxf(lr, -20.0f), 20.0f);
                if (!use_ent_mask || ent[t] >= ent_threshold) ecnt += m;
            }
        } else {
            bad_mask += 1.0f;
        }
    }
    cnt = block_reduce_sum(cnt);
    ecnt = block_reduce_sum(ecnt);
    bad_mask = block_reduce_sum(bad_mask);
    const float cnt1 = fmaxf(cnt, 1.0f);
    float seq_ratio = 1.0f;
    if (level == 1) seq_ratio = expf(block_reduce_sum(lr_sum) / cnt1);
    float phi = 0.0f;
    if (loss_type == LT_VESPO) {
        // TRL's get_gamma_weights: phi = exp(lambda + k*lw - lambda*e^lw), lw the clamped sum
        // of the clamped token log-ratios (log(1e-8) = -18.420680743952367).
        const float lw = fminf(fmaxf(block_reduce_sum(vespo_sum), -18.420680743952367f), 20.0f);
        const bool pos = a >= 0.0f;
        const float kk = pos ? vespo_k_pos : vespo_k_neg;
        const float lam = fmaxf(pos ? vespo_lambda_pos : vespo_lambda_neg, 1e-4f);
        phi = expf(lam + kk * lw - lam * expf(lw));
        if (!pl_finite(phi)) phi = 0.0f;
    }

    float policy = 0.0f, kl_loss = 0.0f, ent_masked = 0.0f, kl_sum = 0.0f, ent_sum = 0.0f;
    float clip_low = 0.0f, clip_high = 0.0f, dual = 0.0f, ratio = 0.0f, rmin = inf, rmax = -inf;
    float bad_lp = 0.0f, bad_old = 0.0f, bad_ref = 0.0f, bad_ent = 0.0f, seq_grad = 0.0f;
    for (int t = threadIdx.x; t < L; t += blockDim.x) {
        const float m = mk[t];
        dlp[t] = 0.0f;
        dh[t] = 0.0f;
        if (!pl_on(m)) continue;
        bad_lp += pl_finite(lp[t]) ? 0.0f : 1.0f;
        bad_old += pl_finite(lpo[t]) ? 0.0f : 1.0f;
        bad_ent += pl_finite(ent[t]) ? 0.0f : 1.0f;
        const float rho = level == 1 ? seq_ratio : expf(lp[t] - lpo[t]);
        const float e = (!use_ent_mask || ent[t] >= ent_threshold) ? 1.0f : 0.0f;
        const PlTerm term = pl_policy_term(k, rho, a, lp[t], phi);
        // d loss / d rho and the direct d loss / d logp of this token, without m * c.
        float d_rho = e * term.d_rho;
        float g = e * term.d_logp;
        policy += m * e * term.value;
        if (use_ref) {
            const float lr = logp_ref[base + t];
            bad_ref += pl_finite(lr) ? 0.0f : 1.0f;
            const float d = lr - lp[t];
            float kv, dk;
            if (kl_est == KL_K1) {
                kv = -d;
                dk = 1.0f;
            } else if (kl_est == KL_K2) {
                kv = 0.5f * d * d;
                dk = -d;
            } else {
                const float em1 = expm1f(d);
                kv = em1 - d;
                dk = -em1;
            }
            float kl = kv;
            if (bias_kl) {
                // K = rho * k, the gradient flowing through rho as well.
                kl = rho * kv;
                dk *= rho;
                d_rho += beta * kv;
            }
            kl_sum += m * kl;
            kl_loss += m * beta * kl;
            g += beta * dk;
        }
        if (level == 1) seq_grad += m * d_rho * rho;
        else g += d_rho * rho;
        dlp[t] = m * g;
        ent_sum += m * ent[t];
        ent_masked += m * e * ent[t];
        dh[t] = -m * e;
        if (level == 0) {
            bool low, high;
            pl_clip_flags(k, rho, a, &low, &high);
            if (low) clip_low += m;
            if (high) clip_high += m;
        }
        if (term.dual) dual += m;
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
                if (pl_on(m)) dlp[t] += per * m;
            }
        }
    }
    // Sequence level: TRL averages one clip flag per sequence over all S sequences.
    bool seq_low = false, seq_high = false;
    if (level == 1) pl_clip_flags(k, seq_ratio, a, &seq_low, &seq_high);
    float* pr = partial + static_cast<long long>(i) * PL_COLS;
    const float v[PL_COLS] = {cnt,     ecnt,    policy,  kl_loss, ent_masked, kl_sum,   ent_sum,
                              clip_low, clip_high, dual, ratio,   rmin,       rmax,     bad_lp,
                              bad_old, bad_ref, bad_mask, bad_ent};
    for (int c = 0; c < PL_COLS; ++c) {
        float r;
        if (c == PL_CNT || c == PL_ECNT || c == PL_BAD_MASK) r = v[c];  // already reduced
        else if (c == PL_CLIP_LOW && level == 1) r = seq_low ? 1.0f : 0.0f;
        else if (c == PL_CLIP_HIGH && level == 1) r = seq_high ? 1.0f : 0.0f;
        else if (c == PL_RATIO_MIN) r = -block_reduce_max(-v[c]);
        else if (c == PL_RATIO_MAX) r = block_reduce_max(v[c]);
        else r = block_reduce_sum(v[c]);
        if (threadIdx.x == 0) pr[c] = r;
    }
}

// The per-sequence scales and the metrics. seq_norm / token_norm: the minibatch's sequences /
// tokens (<= 0: this call's S / mask sum); accum: gradient-accumulation steps (< 1: 1).
// missing_ref: 1 when beta != 0 but no reference log-probs were given (BAD_LOGP_REF then
// reports S*L). One block, a multiple of 32 threads (at least PL_COLS): thread k < PL_COLS sums
// partial column k over the sequences in order; all threads write the scales.
extern "C" __global__ void policy_loss_finalize_f32(float* metrics, float* scale, float* scale_h,
                                                    const float* partial, const float* advantages, int S, int L,
                                                    int level, int loss_type, int max_completion_length,
                                                    float seq_norm, float token_norm, float accum,
                                                    float entropy_coef, int missing_ref) {
    __shared__ float total_s, etotal_s;
    if (threadIdx.x == 0) {
        float tot = 0.0f, etot = 0.0f;
        for (int i = 0; i < S; ++i) {
            tot += partial[static_cast<long long>(i) * PL_COLS + PL_CNT];
            etot += partial[static_cast<long long>(i) * PL_COLS + PL_ECNT];
        }
        total_s = tot;
        etotal_s = etot;
    }
    __syncthreads();
    const float total = total_s;
    const float sn = seq_norm > 0.0f ? seq_norm : static_cast<float>(S);
    const float tn = token_norm > 0.0f ? token_norm : total;
    const float acc = fmaxf(accum, 1.0f);  // also maps NaN to 1
    const float mcl = static_cast<float>(max_completion_length > 1 ? max_completion_length : 1);
    // The entropy bonus is a mean over the entropy-masked tokens, whatever the loss type.
    const float ent_c = entropy_coef / (acc * fmaxf(etotal_s, 1.0f));
    // c_i of every sequence.
    for (int i = threadIdx.x; i < S; i += blockDim.x) {
        const float cnt = partial[static_cast<long long>(i) * PL_COLS + PL_CNT];
        float c;
        if (loss_type == LT_GRPO || loss_type == LT_SAPO) c = 1.0f / (sn * fmaxf(cnt, 1.0f));
        else if (loss_type == LT_LUSPO) c = 1.0f / sn;
        else if (loss_type == LT_BNPO) c = 1.0f / (acc * fmaxf(total, 1.0f));
        else if (loss_type == LT_DR_GRPO) c = 1.0f / (sn * mcl);
        else c = 1.0f / fmaxf(tn, 1.0f);  // dapo, cispo, vespo
        scale[i] = c;
        scale_h[i] = ent_c;
    }
    __syncthreads();
    const int k = threadIdx.x;
    const float inf = __uint_as_float(0x7f800000u);
    const float inv_total = total > 0.0f ? 1.0f / total : 0.0f;
    const float inv_clip = level == 1 ? 1.0f / static_cast<float>(S > 1 ? S : 1) : inv_total;
    if (k == 0) {
        // The aggregated loss and policy term: sum_i c_i * (sequence sums) - the entropy bonus.
        float loss = 0.0f, pol = 0.0f, ent_masked = 0.0f;
        for (int i = 0; i < S; ++i) {
            const float* pr = partial + static_cast<long long>(i) * PL_COLS;
            loss += scale[i] * (pr[PL_POLICY] + pr[PL_KL_LOSS]);
            pol += scale[i] * pr[PL_POLICY];
            ent_masked += pr[PL_ENT_MASKED];
        }
        metrics[PM_LOSS] = loss - ent_c * ent_masked;
        metrics[PM_POLICY_LOSS] = pol;
        metrics[PM_MASK_SUM] = total;
        float bad_adv = 0.0f;
        for (int i = 0; i < S; ++i) bad_adv += pl_finite(advantages[i]) ? 0.0f : 1.0f;
        metrics[PM_BAD_ADVANTAGE] = bad_adv;
    } else if (k < PL_COLS && k != PL_ECNT && k != PL_POLICY && k != PL_KL_LOSS && k != PL_ENT_MASKED) {
        const bool is_min = k == PL_RATIO_MIN, is_max = k == PL_RATIO_MAX;
        float a = is_min ? inf : (is_max ? -inf : 0.0f);
        for (int i = 0; i < S; ++i) {
            const float v = partial[static_cast<long long>(i) * PL_COLS + k];
            a = is_min ? fminf(a, v) : (is_max ? fmaxf(a, v) : a + v);
        }
        switch (k) {
            case PL_KL: metrics[PM_KL_MEAN] = a * inv_total; break;
            case PL_ENT: metrics[PM_ENTROPY_MEAN] = a * inv_total; break;
            case PL_CLIP_LOW: metrics[PM_CLIP_FRAC_LOW] = a * inv_clip; break;
            case PL_CLIP_HIGH: metrics[PM_CLIP_FRAC_HIGH] = a * inv_clip; break;
            case PL_DUAL: metrics[PM_DUAL_CLIP_FRAC] = a * inv_total; break;
            case PL_RATIO: metrics[PM_RATIO_MEAN] = a * inv_total; break;
            case PL_RATIO_MIN: metrics[PM_RATIO_MIN] = total > 0.0f ? a : 0.0f; break;
            case PL_RATIO_MAX: metrics[PM_RATIO_MAX] = total > 0.0f ? a : 0.0f; break;
            case PL_BAD_LOGP: metrics[PM_BAD_LOGP] = a; break;
            case PL_BAD_OLD: metrics[PM_BAD_LOGP_OLD] = a; break;
            case PL_BAD_REF: metrics[PM_BAD_LOGP_REF] = missing_ref ? static_cast<float>(S) * L : a; break;
            case PL_BAD_MASK: metrics[PM_BAD_MASK] = a; break;
            case PL_BAD_ENT: metrics[PM_BAD_ENTROPY] = a; break;
            default: break;  // PL_CNT: the mask sum, written by thread 0
        }
    }
}

// dlogp (S, L) *= scale[row], dentropy (S, L) *= scale_h[row]. 1-D grid covering S*L threads.
extern "C" __global__ void policy_loss_scale_f32(float* dlogp, float* dentropy, const float* scale,
                                                 const float* scale_h, int S, int L) {
    const long long j = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (j >= static_cast<long long>(S) * L) return;
    const long long row = j / L;
    dlogp[j] *= scale[row];
    dentropy[j] *= scale_h[row];
}

// Drawing one token per row of logits: the device form of `Backend::sample`, whose oracle is
// `rollout::sampler::sample` (src/rollout/sampler.rs) with the uniform of
// `util::counter_rng::uniform` (Philox4x32-10, ported below bit for bit).
//
// One block per row (grid (rows,1,1), 1-D block, a multiple of 32 threads, at most 1024), no
// dynamic shared memory: V = 50257 does not fit shared memory, so nothing V-sized is stored and
// the row is re-read (from L2 / global memory) by each pass instead.
//
// Per row, with z_j = x_j * inv_t (f32) and m = max z:
//   1. checks, in the oracle's order: the first NaN/+inf logit in id order, no finite logit,
//      a NaN/+inf z (temperature overflow);
//   2. ln s with s = sum_j exp((double)z_j - m) in f64, as the oracle's log_softmax_at;
//   3. the token: greedy = lowest id of max z; no truncation = the first id whose running f64
//      mass exceeds u * s (a block scan in id order); truncation = a radix select, below;
//   4. out[5r..5r+5] = token, logprob bits, status, u low word, u high word (the uniform is
//      returned so the host can check the Philox port bit for bit).
//
// Truncation works on the order (p desc, id asc) with p_j = exp((double)z_j - m), through one
// primitive, select(): among a "kept" prefix of that order, find the first element at which a
// running weight (1 per token = a count, or p = a mass) reaches a target (>=) or exceeds it (>).
// top-k is select(count >= k), top-p select(mass >= top_p * kept mass), the draw
// select(mass > u * kept mass) over kept tokens with p > 0. The key is the bit pattern of p
// (a non-negative double, so its bits order like its value): ordering by it is exactly the
// oracle's order, including the ties of distinct logits whose p rounds equal in f64. select()
// is a radix select over the 64-bit key, 8 passes of 8 bits: each pass histograms (count and
// weight, shared-memory atomics) the kept tokens whose key matches the bytes fixed so far,
// then walks the 256 buckets from the top to the one where the running weight crosses. A
// crossing bucket holding a single token ends the select early; after 8 passes the tokens
// holding the selected key (an exact tie in p) are walked in id order (a block scan) to break
// the tie by the lower id. Each select fixes a new end of the kept prefix, (key, id).
//
// f64 on the device: the oracle forms p, its sums and ln s in f64, and matching its precision
// is what lets tokens be compared exactly and log-probs to one f32 ulp; the cost (a few f64
// exps per token per pass, one row per sequence per decode step) is small on an H100.
//
// Rounding: the f64 sums here run in a different order than the oracle's (and the mass
// histograms' atomics in an unspecified one), so a crossing can move only when the target sits
// within ~1e-15 relative of a cumulative boundary; counts are exact. Where rounding leaves no
// crossing, the rules are the oracle's: top-p keeps the whole top-k set, the draw takes the
// last kept token with p > 0.
#include "common.cuh"

#define SAMPLE_OUT_WORDS 5
#define SAMPLE_OK 0u
#define SAMPLE_NON_FINITE 1u
#define SAMPLE_ALL_MASKED 2u
#define SAMPLE_TEMPERATURE_OVERFLOW 3u
#define SAMPLE_MAX_THREADS 1024

// ---- Philox4x32-10 and the 53-bit uniform (src/util/counter_rng.rs) ---------------------------

__device__ __forceinline__ double sample_uniform(unsigned long long seed, unsigned long long step,
                                                 unsigned int sequence, unsigned int position) {
    unsigned int c0 = position, c1 = sequence, c2 = static_cast<unsigned int>(step),
                 c3 = static_cast<unsigned int>(step >> 32);
    unsigned int k0 = static_cast<unsigned int>(seed), k1 = static_cast<unsigned int>(seed >> 32);
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        const unsigned long long p0 = 0xD2511F53ull * c0;
        const unsigned long long p1 = 0xCD9E8D57ull * c2;
        const unsigned int n0 = static_cast<unsigned int>(p1 >> 32) ^ c1 ^ k0;
        const unsigned int n2 = static_cast<unsigned int>(p0 >> 32) ^ c3 ^ k1;
        c1 = static_cast<unsigned int>(p1);
        c3 = static_cast<unsigned int>(p0);
        c0 = n0;
        c2 = n2;
    }
    const unsigned long long bits = ((static_cast<unsigned long long>(c0) << 32) | c1) >> 11;
    return static_cast<double>(bits) * (1.0 / 9007199254740992.0);  // 2^-53: exact
}

// ---- block reductions of any 8-byte-or-smaller type (common.cuh has f32 only) ----------------

// The reductions' operations, chosen at compile time (no functors: the emulator turns
// `__device__` into `static`, which a member function cannot be).
#define SAMPLE_MIN 0
#define SAMPLE_MAX 1
#define SAMPLE_SUM 2

template <int OP, typename T>
__device__ __forceinline__ T sample_op(T a, T b) {
    return OP == SAMPLE_MIN ? (a < b ? a : b) : OP == SAMPLE_MAX ? (a > b ? a : b) : a + b;
}

// Every thread must call it and gets the result. The shuffle tree's order is fixed, so f64
// sums are deterministic. The leading barrier lets calls follow each other (as common.cuh's).
template <int OP, typename T>
__device__ T sample_block_reduce(T v, T identity) {
    __shared__ T partial[WARP_SIZE];
    const int lane = threadIdx.x % WARP_SIZE;
    const int warp = threadIdx.x / WARP_SIZE;
    const int nwarps = blockDim.x / WARP_SIZE;
    for (int offset = WARP_SIZE / 2; offset > 0; offset >>= 1) v = sample_op<OP>(v, __shfl_xor_sync(FULL_MASK, v, offset));
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    v = lane < nwarps ? partial[lane] : identity;
    for (int offset = WARP_SIZE / 2; offset > 0; offset >>= 1) v = sample_op<OP>(v, __shfl_xor_sync(FULL_MASK, v, offset));
    return v;
}

// ---- the kept prefix of the order (p desc, id asc) -------------------------------------------

// Token j with key k is kept when (k, j) is at or before the prefix's end (end_key, end_id) in
// the order, and k >= min_key (1 drops the zero-mass tokens, 0 keeps them).
struct SampleKept {
    unsigned long long end_key;
    int end_id;
    unsigned long long min_key;
};

__device__ __forceinline__ bool sample_has(const SampleKept& kept, unsigned long long k, int j) {
    return k >= kept.min_key && (k > kept.end_key || (k == kept.end_key && j <= kept.end_id));
}

struct SampleRow {
    const float* x;
    int V;
    float inv_t;
    double m;
};

// p_j = exp(z_j - m) in f64, recomputed on every pass rather than stored (no V-sized memory).
__device__ __forceinline__ double sample_p(const SampleRow& row, int j) {
    return exp(static_cast<double>(row.x[j] * row.inv_t) - row.m);
}

__device__ __forceinline__ unsigned long long sample_key(double p) {
    return static_cast<unsigned long long>(__double_as_longlong(p));
}

// The first token, in id order, of the kept tokens (with key == only_key when `match_key`),
// at which base + the running weight (1 per token when `count`, else p) reaches `target` (>=,
// or > when `strict`); the last such token when rounding leaves no crossing; -1 for none.
// Each thread walks a contiguous chunk of ids, so a block scan of the chunk sums gives every
// thread its starting sum.
__device__ int sample_walk_ids(const SampleRow& row, SampleKept kept, bool match_key, unsigned long long only_key,
                               bool count, bool strict, double base, double target) {
    __shared__ double scan[SAMPLE_MAX_THREADS];
    const int n = blockDim.x, t = threadIdx.x;
    const int chunk = (row.V + n - 1) / n;
    const int lo = min(row.V, t * chunk), hi = min(row.V, lo + chunk);
    double local = 0.0;
    int last = -1;
    for (int j = lo; j < hi; ++j) {
        const double p = sample_p(row, j);
        const unsigned long long k = sample_key(p);
        if (!sample_has(kept, k, j) || (match_key && k != only_key)) continue;
        local += count ? 1.0 : p;
        last = j;
    }
    scan[t] = local;
    __syncthreads();
    if (t == 0) {
        double cum = base;
        for (int i = 0; i < n; ++i) {
            const double w = scan[i];
            scan[i] = cum;
            cum += w;
        }
    }
    __syncthreads();
    double cum = scan[t];
    int found = row.V;
    for (int j = lo; j < hi; ++j) {
        const double p = sample_p(row, j);
        const unsigned long long k = sample_key(p);
        if (!sample_has(kept, k, j) || (match_key && k != only_key)) continue;
        cum += count ? 1.0 : p;
        if (strict ? cum > target : cum >= target) {
            found = j;
            break;
        }
    }
    found = sample_block_reduce<SAMPLE_MIN>(found, row.V);
    if (found < row.V) return found;
    return sample_block_reduce<SAMPLE_MAX>(last, -1);
}

// select(): the (key, id) of the first kept token, in (p desc, id asc) order, at which the
// running weight reaches `target` (see sample_walk_ids for count/strict). False when even the
// whole kept set does not reach it. Every thread gets the result.
__device__ bool sample_select(const SampleRow& row, SampleKept kept, bool count, bool strict, double target,
                              unsigned long long* key_out, int* id_out) {
    __shared__ double hist_w[256];
    __shared__ int hist_n[256];
    __shared__ int hist_id[256];  // the highest id in each bucket: the token when it is alone
    __shared__ int sel_bucket, sel_count, sel_id;
    __shared__ double sel_before;
    unsigned long long prefix = 0, mask = 0;
    double before = 0.0;  // weight of the kept tokens ahead of the current key range
    for (int pass = 0; pass < 8; ++pass) {
        const int shift = 56 - 8 * pass;
        for (int b = threadIdx.x; b < 256; b += blockDim.x) {
            hist_w[b] = 0.0;
            hist_n[b] = 0;
            hist_id[b] = -1;
        }
        __syncthreads();
        for (int j = threadIdx.x; j < row.V; j += blockDim.x) {
            const double p = sample_p(row, j);
            const unsigned long long k = sample_key(p);
            if (!sample_has(kept, k, j) || (k & mask) != prefix) continue;
            const int b = static_cast<int>((k >> shift) & 0xFFu);
            atomicAdd(&hist_n[b], 1);
            atomicAdd(&hist_w[b], count ? 1.0 : p);
            atomicMax(&hist_id[b], j);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            // Buckets from the highest key down; only non-empty ones can hold the crossing.
            int chosen = -1, last = -1;
            double cum = before, last_before = before;
            for (int b = 255; b >= 0; --b) {
                if (hist_n[b] == 0) continue;
                const double next = cum + hist_w[b];
                if (strict ? next > target : next >= target) {
                    chosen = b;
                    break;
                }
                last = b;
                last_before = cum;
                cum = next;
            }
            if (chosen >= 0) {
                sel_before = cum;
            } else if (pass > 0) {
                // The previous pass's bucket crossed but its sub-buckets, summed in another
                // order, do not: rounding. Its last token is the crossing.
                chosen = last;
                sel_before = last_before;
            }
            sel_bucket = chosen;
            sel_count = chosen >= 0 ? hist_n[chosen] : 0;
            sel_id = chosen >= 0 ? hist_id[chosen] : -1;
        }
        __syncthreads();
        const int b = sel_bucket;
        if (b < 0) return false;  // pass 0: the whole kept set stays below the target
        if (sel_count == 1) {
            // One kept token in the crossing bucket: it is the crossing; the remaining passes
            // would only spell out its key. (Usually after 2-3 passes for distinct logits.)
            *id_out = sel_id;
            *key_out = sample_key(sample_p(row, sel_id));
            return true;
        }
        before = sel_before;
        prefix |= static_cast<unsigned long long>(b) << shift;
        mask |= 0xFFull << shift;
    }
    // Several kept tokens share the key `prefix` (an exact tie in p): the id order breaks it.
    *key_out = prefix;
    *id_out = sample_walk_ids(row, kept, true, prefix, count, strict, before, target);
    return true;
}

// Σ p over the kept tokens (f64, deterministic tree order).
__device__ double sample_kept_mass(const SampleRow& row, SampleKept kept) {
    double s = 0.0;
    for (int j = threadIdx.x; j < row.V; j += blockDim.x) {
        const double p = sample_p(row, j);
        if (sample_has(kept, sample_key(p), j)) s += p;
    }
    return sample_block_reduce<SAMPLE_SUM>(s, 0.0);
}

// The last kept token in (p desc, id asc) order: the highest id of the lowest kept key.
__device__ int sample_last_kept(const SampleRow& row, SampleKept kept) {
    unsigned long long lowest = ~0ull;
    for (int j = threadIdx.x; j < row.V; j += blockDim.x) {
        const unsigned long long k = sample_key(sample_p(row, j));
        if (sample_has(kept, k, j) && k < lowest) lowest = k;
    }
    lowest = sample_block_reduce<SAMPLE_MIN>(lowest, ~0ull);
    int id = -1;
    for (int j = threadIdx.x; j < row.V; j += blockDim.x) {
        const unsigned long long k = sample_key(sample_p(row, j));
        if (sample_has(kept, k, j) && k == lowest) id = j;
    }
    return sample_block_reduce<SAMPLE_MAX>(id, -1);
}

// out: rows * SAMPLE_OUT_WORDS u32; logits: rows * V f32; counters: rows * 2 u32 (sequence,
// position). greedy != 0 means temperature 0 (then inv_t is 1). top_k: 0 = off (the host maps
// top_k >= V to 0); top-p applies when top_p < 1.
extern "C" __global__ void sample_f32(unsigned int* out, const float* logits, const unsigned int* counters, int rows,
                                      int V, float inv_t, int greedy, int top_k, float top_p,
                                      unsigned long long seed, unsigned long long step) {
    const int r = blockIdx.x;
    if (r >= rows) return;  // uniform across the block
    const float* x = logits + static_cast<long long>(r) * V;
    unsigned int* o = out + static_cast<long long>(r) * SAMPLE_OUT_WORDS;
    const float pos_inf = __uint_as_float(0x7f800000u);
    const double u = sample_uniform(seed, step, counters[2 * r], counters[2 * r + 1]);
    if (threadIdx.x == 0) {
        const unsigned long long ub = static_cast<unsigned long long>(__double_as_longlong(u));
        o[3] = static_cast<unsigned int>(ub);
        o[4] = static_cast<unsigned int>(ub >> 32);
    }

    // 1. The checks (NaN is the value unequal to itself; x - x is 0 exactly for finite x).
    int bad = V, finite = 0, z_bad = 0;
    float mz = -pos_inf;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        const float xj = x[j];
        if ((xj != xj || xj == pos_inf) && j < bad) bad = j;
        if (xj - xj == 0.0f) finite = 1;
        const float z = xj * inv_t;
        if (z != z || z == pos_inf) z_bad = 1;
        if (z > mz) mz = z;
    }
    bad = sample_block_reduce<SAMPLE_MIN>(bad, V);
    finite = sample_block_reduce<SAMPLE_MAX>(finite, 0);
    z_bad = sample_block_reduce<SAMPLE_MAX>(z_bad, 0);
    mz = sample_block_reduce<SAMPLE_MAX>(mz, -pos_inf);
    unsigned int status = SAMPLE_OK, w0 = 0, w1 = 0;
    if (bad < V) {
        status = SAMPLE_NON_FINITE;
        w0 = static_cast<unsigned int>(bad);
        w1 = __float_as_uint(x[bad]);
    } else if (!finite) {
        status = SAMPLE_ALL_MASKED;
    } else if (z_bad) {
        status = SAMPLE_TEMPERATURE_OVERFLOW;
    }
    if (status != SAMPLE_OK) {  // uniform: every value above is a block reduction
        if (threadIdx.x == 0) {
            o[0] = w0;
            o[1] = w1;
            o[2] = status;
        }
        return;
    }

    // 2. ln s in f64, as the oracle (the token's log-prob is that of the untruncated row).
    const SampleRow row{x, V, inv_t, static_cast<double>(mz)};
    double s = 0.0;
    for (int j = threadIdx.x; j < V; j += blockDim.x) s += sample_p(row, j);
    s = sample_block_reduce<SAMPLE_SUM>(s, 0.0);

    // 3. The token.
    int tok;
    const SampleKept all{0ull, V - 1, 0ull};
    if (greedy) {
        // Lowest id holding the maximum (-0 == +0, so the two zeros tie as in the oracle).
        int first = V;
        for (int j = threadIdx.x; j < V; j += blockDim.x) {
            if (x[j] * inv_t == mz && j < first) first = j;
        }
        tok = sample_block_reduce<SAMPLE_MIN>(first, V);
    } else if (top_k == 0 && !(top_p < 1.0f)) {
        // In id order over the tokens with p > 0; s is their total.
        const SampleKept positive{0ull, V - 1, 1ull};
        tok = sample_walk_ids(row, positive, false, 0ull, false, true, 0.0, u * s);
    } else {
        SampleKept kept = all;
        unsigned long long key;
        int id;
        if (top_k > 0 && sample_select(row, kept, true, false, static_cast<double>(top_k), &key, &id)) {
            kept.end_key = key;
            kept.end_id = id;
        }
        if (top_p < 1.0f) {
            const double target = static_cast<double>(top_p) * sample_kept_mass(row, kept);
            if (sample_select(row, kept, false, false, target, &key, &id)) {
                kept.end_key = key;
                kept.end_id = id;
            }
        }
        kept.min_key = 1ull;  // zero-mass tokens are never drawn
        const double target = u * sample_kept_mass(row, kept);
        if (sample_select(row, kept, false, true, target, &key, &id)) {
            tok = id;
        } else {
            tok = sample_last_kept(row, kept);
        }
    }

    // 4. Out.
    if (threadIdx.x == 0) {
        const double lp = (static_cast<double>(x[tok] * inv_t) - row.m) - log(s);
        o[0] = static_cast<unsigned int>(tok);
        o[1] = __float_as_uint(static_cast<float>(lp));
        o[2] = SAMPLE_OK;
    }
}

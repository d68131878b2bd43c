// Causal multi-head self-attention, flash style: forward, backward, and the KV-cache attention
// of decoding. The device form of the CPU ops in src/backend/cpu/attention.rs and
// src/backend/cpu/generation.rs (the oracles).
//
// Layout: qkv (B,T,3C) holds q in channels [0,C), k in [C,2C), v in [2C,3C) of each position;
// head h owns channels [h*hs, (h+1)*hs) of each third, hs = C/NH. out (B,T,C), lse (B,NH,T).
// scale = 1/sqrt(hs) is passed in, computed on the host exactly as the oracle computes it.
//
// Work split (all three attention kernels): one warp per row (a query row in the forward and
// the dq pass, a key row in the dk/dv pass), ATT_ROWS rows per block, and the other side
// streamed through shared memory ATT_TILE = 32 rows at a time, so that lane l of a warp owns
// row l of the tile: it computes that row's score with a plain dot product (no shuffle per
// score), the tile's max and sum are warp reductions, and the per-warp probabilities go
// through shared memory to the accumulation, where lane l owns channels l, l+32, ... of the
// output row (at most ATT_MAX_PER_LANE of them, hence hs <= 128). The (T,T) matrix is never
// written to device memory. Tile rows that lanes read whole (lane-indexed rows) use a row
// stride of hs+1 so that the 32 lanes hit 32 different shared-memory banks.
//
// Every loop bound that contains a barrier or a warp reduction is uniform over the block (it
// depends on blockIdx only); rows past T are clamped to T-1 for the arithmetic and simply not
// written, so no thread leaves early.
#include "common.cuh"

#define ATT_ROWS 8          // warps (rows) per block of the forward and backward kernels
#define ATT_TILE 32         // streamed rows per tile: one per lane
#define ATT_MAX_PER_LANE 4  // output channels per lane: hs <= 4*32

__device__ __forceinline__ float att_neg_inf() { return -__uint_as_float(0x7f800000u); }

// ---- forward ---------------------------------------------------------------------------------

// Grid (ceil(T/ATT_ROWS), NH, B), block ATT_ROWS*32 threads. Dynamic shared memory, in floats:
// Q (ATT_ROWS, hs) + K tile (ATT_TILE, hs+1) + V tile (ATT_TILE, hs) + P (ATT_ROWS, ATT_TILE).
template <typename TA>
__device__ void attention_forward(TA* out, float* lse, const TA* qkv, int T, int NH, int C, float scale) {
    DYNAMIC_SHARED(float, smem);
    const int hs = C / NH;
    const int ks = hs + 1;
    float* Qs = smem;
    float* Ks = Qs + ATT_ROWS * hs;
    float* Vs = Ks + ATT_TILE * ks;
    float* Ps = Vs + ATT_TILE * hs;

    const int b = blockIdx.z, h = blockIdx.y;
    const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    const int q0 = blockIdx.x * ATT_ROWS;
    const int i_row = q0 + warp;
    const int i = min(i_row, T - 1);
    const long long C3 = 3LL * C;
    const TA* base = qkv + static_cast<long long>(b) * T * C3 + static_cast<long long>(h) * hs;

    for (int d = lane; d < hs; d += WARP_SIZE) Qs[warp * hs + d] = to_f32(base[i * C3 + d]);

    float m = att_neg_inf(), l = 0.0f;
    float acc[ATT_MAX_PER_LANE];
    for (int r = 0; r < ATT_MAX_PER_LANE; ++r) acc[r] = 0.0f;

    // Keys 0..=last are needed by some row of the block.
    const int last = min(T - 1, q0 + ATT_ROWS - 1);
    for (int j0 = 0; j0 <= last; j0 += ATT_TILE) {
        __syncthreads();  // the previous tile's K/V/P reads (and the Q writes) are done
        for (int idx = threadIdx.x; idx < ATT_TILE * hs; idx += blockDim.x) {
            const int jj = idx / hs, d = idx % hs, j = j0 + jj;
            const bool in = j < T;
            Ks[jj * ks + d] = in ? to_f32(base[j * C3 + C + d]) : 0.0f;
            Vs[jj * hs + d] = in ? to_f32(base[j * C3 + 2 * C + d]) : 0.0f;
        }
        __syncthreads();

        const int j = j0 + lane;
        float s = att_neg_inf();
        if (j <= i) {
            float dot = 0.0f;
            for (int d = 0; d < hs; ++d) dot += Qs[warp * hs + d] * Ks[lane * ks + d];
            s = dot * scale;
        }
        // Key 0 is in the first tile for every row, so m_new is finite from the first tile on;
        // a tile wholly past row i leaves m unchanged (corr = 1, every p = 0).
        const float m_new = fmaxf(m, warp_reduce_max(s));
        const float p = expf(s - m_new);
        const float corr = expf(m - m_new);
        l = l * corr + warp_reduce_sum(p);
        m = m_new;
        Ps[warp * ATT_TILE + lane] = p;
        __syncwarp();

        const int nj = min(ATT_TILE, i - j0 + 1);  // keys of this tile row i sees (may be <= 0)
        for (int r = 0; r < ATT_MAX_PER_LANE; ++r) {
            const int d = lane + r * WARP_SIZE;
            if (d >= hs) break;
            float a = acc[r] * corr;
            for (int jj = 0; jj < nj; ++jj) a += Ps[warp * ATT_TILE + jj] * Vs[jj * hs + d];
            acc[r] = a;
        }
    }

    if (i_row < T) {
        const float inv = 1.0f / l;
        TA* o = out + (static_cast<long long>(b) * T + i) * C + static_cast<long long>(h) * hs;
        for (int r = 0; r < ATT_MAX_PER_LANE; ++r) {
            const int d = lane + r * WARP_SIZE;
            if (d < hs) store(o + d, acc[r] * inv);
        }
        if (lane == 0) lse[(static_cast<long long>(b) * NH + h) * T + i] = m + logf(l);
    }
}

// ---- backward --------------------------------------------------------------------------------
// Two deterministic passes instead of atomics: dq per query row (streaming keys), then dk and
// dv per key row (streaming queries). Each output value is then written by exactly one lane,
// in a fixed summation order, so dqkv is overwritten without a zeroing pass and is bitwise
// reproducible from run to run; the price is computing P a second time.
// With s = q.k*scale, P = exp(s - lse), D_i = dout_i.out_i, dS = P (dout_i.v_j - D_i) scale:
// dq_i = sum_j dS_ij k_j, dk_j = sum_i dS_ij q_i, dv_j = sum_i P_ij dout_i.

// Pass 1. Grid (ceil(T/ATT_ROWS), NH, B), block ATT_ROWS*32. Writes the q third of dqkv and
// dsum (B,NH,T) = D for pass 2. Dynamic shared memory, in floats: Q and dO rows
// (2 x ATT_ROWS x hs) + K and V tiles (2 x ATT_TILE x (hs+1)) + dS (ATT_ROWS, ATT_TILE).
template <typename TA>
__device__ void attention_backward_dq(TA* dqkv, float* dsum, const float* dout, const TA* qkv, const TA* out,
                                      const float* lse, int T, int NH, int C, float scale) {
    DYNAMIC_SHARED(float, smem);
    const int hs = C / NH;
    const int ks = hs + 1;
    float* Qs = smem;
    float* Gs = Qs + ATT_ROWS * hs;
    float* Ks = Gs + ATT_ROWS * hs;
    float* Vs = Ks + ATT_TILE * ks;
    float* Ss = Vs + ATT_TILE * ks;

    const int b = blockIdx.z, h = blockIdx.y;
    const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    const int q0 = blockIdx.x * ATT_ROWS;
    const int i_row = q0 + warp;
    const int i = min(i_row, T - 1);
    const long long C3 = 3LL * C;
    const long long hoff = static_cast<long long>(h) * hs;
    const TA* base = qkv + static_cast<long long>(b) * T * C3 + hoff;
    const long long orow = (static_cast<long long>(b) * T + i) * C + hoff;  // row i of dout/out
    const long long lrow = (static_cast<long long>(b) * NH + h) * T + i;    // row i of lse/dsum

    float dd = 0.0f;
    for (int d = lane; d < hs; d += WARP_SIZE) {
        const float g = dout[orow + d];
        Qs[warp * hs + d] = to_f32(base[i * C3 + d]);
        Gs[warp * hs + d] = g;
        dd += g * to_f32(out[orow + d]);
    }
    dd = warp_reduce_sum(dd);
    const float li = lse[lrow];
    if (i_row < T && lane == 0) dsum[lrow] = dd;

    float acc[ATT_MAX_PER_LANE];
    for (int r = 0; r < ATT_MAX_PER_LANE; ++r) acc[r] = 0.0f;

    const int last = min(T - 1, q0 + ATT_ROWS - 1);
    for (int j0 = 0; j0 <= last; j0 += ATT_TILE) {
        __syncthreads();
        for (int idx = threadIdx.x; idx < ATT_TILE * hs; idx += blockDim.x) {
            const int jj = idx / hs, d = idx % hs, j = j0 + jj;
            const bool in = j < T;
            Ks[jj * ks + d] = in ? to_f32(base[j * C3 + C + d]) : 0.0f;
            Vs[jj * ks + d] = in ? to_f32(base[j * C3 + 2 * C + d]) : 0.0f;
        }
        __syncthreads();

        const int j = j0 + lane;
        float ds = 0.0f;
        if (j <= i) {
            float qk = 0.0f, gv = 0.0f;
            for (int d = 0; d < hs; ++d) {
                qk += Qs[warp * hs + d] * Ks[lane * ks + d];
                gv += Gs[warp * hs + d] * Vs[lane * ks + d];
            }
            const float p = expf(qk * scale - li);
            ds = p * (gv - dd) * scale;
        }
        Ss[warp * ATT_TILE + lane] = ds;
        __syncwarp();

        const int nj = min(ATT_TILE, i - j0 + 1);
        for (int r = 0; r < ATT_MAX_PER_LANE; ++r) {
            const int d = lane + r * WARP_SIZE;
            if (d >= hs) break;
            float a = acc[r];
            for (int jj = 0; jj < nj; ++jj) a += Ss[warp * ATT_TILE + jj] * Ks[jj * ks + d];
            acc[r] = a;
        }
    }

    if (i_row < T) {
        TA* dq = dqkv + (static_cast<long long>(b) * T + i) * C3 + hoff;
        for (int r = 0; r < ATT_MAX_PER_LANE; ++r) {
            const int d = lane + r * WARP_SIZE;
            if (d < hs) store(dq + d, acc[r]);
        }
    }
}

// Pass 2. Grid (ceil(T/ATT_ROWS), NH, B), block ATT_ROWS*32; warp w owns key row
// j = blockIdx.x*ATT_ROWS + w and streams the query rows i >= j. Writes the k and v thirds of
// dqkv. Reads dsum from pass 1 (an earlier launch on the same stream). Dynamic shared memory,
// in floats: K and V rows (2 x ATT_ROWS x hs) + Q and dO tiles (2 x ATT_TILE x (hs+1)) + lse
// and D of the tile (2 x ATT_TILE) + P and dS (2 x ATT_ROWS x ATT_TILE).
template <typename TA>
__device__ void attention_backward_dkv(TA* dqkv, const float* dsum, const float* dout, const TA* qkv,
                                       const float* lse, int T, int NH, int C, float scale) {
    DYNAMIC_SHARED(float, smem);
    const int hs = C / NH;
    const int ts = hs + 1;
    float* Kw = smem;
    float* Vw = Kw + ATT_ROWS * hs;
    float* Qt = Vw + ATT_ROWS * hs;
    float* Gt = Qt + ATT_TILE * ts;
    float* Lt = Gt + ATT_TILE * ts;
    float* Dt = Lt + ATT_TILE;
    float* Pw = Dt + ATT_TILE;
    float* Sw = Pw + ATT_ROWS * ATT_TILE;

    const int b = blockIdx.z, h = blockIdx.y;
    const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    const int k0 = blockIdx.x * ATT_ROWS;
    const int j_row = k0 + warp;
    const int j = min(j_row, T - 1);
    const long long C3 = 3LL * C;
    const long long hoff = static_cast<long long>(h) * hs;
    const TA* base = qkv + static_cast<long long>(b) * T * C3 + hoff;
    const float* gbase = dout + static_cast<long long>(b) * T * C + hoff;
    const long long lbase = (static_cast<long long>(b) * NH + h) * T;

    for (int d = lane; d < hs; d += WARP_SIZE) {
        Kw[warp * hs + d] = to_f32(base[j * C3 + C + d]);
        Vw[warp * hs + d] = to_f32(base[j * C3 + 2 * C + d]);
    }

    float dk[ATT_MAX_PER_LANE], dv[ATT_MAX_PER_LANE];
    for (int r = 0; r < ATT_MAX_PER_LANE; ++r) dk[r] = dv[r] = 0.0f;

    // Query rows k0..T-1 see some key of the block; start at the tile that holds k0.
    for (int i0 = (k0 / ATT_TILE) * ATT_TILE; i0 < T; i0 += ATT_TILE) {
        __syncthreads();
        for (int idx = threadIdx.x; idx < ATT_TILE * hs; idx += blockDim.x) {
            const int ii = idx / hs, d = idx % hs, i = i0 + ii;
            const bool in = i < T;
            Qt[ii * ts + d] = in ? to_f32(base[i * C3 + d]) : 0.0f;
            Gt[ii * ts + d] = in ? gbase[static_cast<long long>(i) * C + d] : 0.0f;
        }
        if (threadIdx.x < ATT_TILE) {
            const int i = i0 + threadIdx.x;
            Lt[threadIdx.x] = i < T ? lse[lbase + i] : 0.0f;
            Dt[threadIdx.x] = i < T ? dsum[lbase + i] : 0.0f;
        }
        __syncthreads();

        const int i = i0 + lane;
        float p = 0.0f, ds = 0.0f;
        if (i >= j && i < T) {
            float qk = 0.0f, gv = 0.0f;
            for (int d = 0; d < hs; ++d) {
                qk += Qt[lane * ts + d] * Kw[warp * hs + d];
                gv += Gt[lane * ts + d] * Vw[warp * hs + d];
            }
            p = expf(qk * scale - Lt[lane]);
            ds = p * (gv - Dt[lane]) * scale;
        }
        Pw[warp * ATT_TILE + lane] = p;
        Sw[warp * ATT_TILE + lane] = ds;
        __syncwarp();

        // Tile rows lo..hi-1 are the queries i >= j, i < T (per warp, so uniform in the warp).
        const int lo = max(0, j - i0), hi = min(ATT_TILE, T - i0);
        for (int r = 0; r < ATT_MAX_PER_LANE; ++r) {
            const int d = lane + r * WARP_SIZE;
            if (d >= hs) break;
            float ak = dk[r], av = dv[r];
            for (int ii = lo; ii < hi; ++ii) {
                ak += Sw[warp * ATT_TILE + ii] * Qt[ii * ts + d];
                av += Pw[warp * ATT_TILE + ii] * Gt[ii * ts + d];
            }
            dk[r] = ak;
            dv[r] = av;
        }
    }

    if (j_row < T) {
        TA* row = dqkv + (static_cast<long long>(b) * T + j) * C3 + hoff;
        for (int r = 0; r < ATT_MAX_PER_LANE; ++r) {
            const int d = lane + r * WARP_SIZE;
            if (d < hs) {
                store(row + C + d, dk[r]);
                store(row + 2 * C + d, dv[r]);
            }
        }
    }
}

// ---- KV-cache attention (decoding / prefill) ---------------------------------------------------
// Row r of qkv (R,3C) is position pos[r] of cache sequence seq[r]; caches (B, T_max, C).
// Two launches, as the oracle's two phases: every row's k and v are stored before any row
// attends, so rows of one sequence prefilled together see each other's keys. A row whose
// (seq, pos) is out of range stores nothing and gets NaN outputs: the guard keeps a bad index
// from writing outside the caches.

// Phase 1. Grid (R), 1-D block striding over C.
template <typename TA>
__device__ void attention_cache_store(TA* k_cache, TA* v_cache, const TA* qkv, const unsigned int* seq,
                                      const unsigned int* pos, int R, int B, int T_max, int C) {
    const int r = blockIdx.x;
    if (r >= R) return;
    const unsigned int s = seq[r], p = pos[r];
    if (s >= static_cast<unsigned int>(B) || p >= static_cast<unsigned int>(T_max)) return;
    const long long slot = (static_cast<long long>(s) * T_max + p) * C;
    const TA* row = qkv + static_cast<long long>(r) * 3 * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        k_cache[slot + c] = row[C + c];
        v_cache[slot + c] = row[2 * C + c];
    }
}

// Phase 2. Grid (R, NH), one warp per block, keys 0..=pos[r] of sequence seq[r] streamed from
// the cache a tile of 32 at a time (lane l scores key j0+l), online softmax as in the forward.
// Decoding attends one row per sequence, so there is no query tile to share keys across.
// Dynamic shared memory, in floats: q (hs) + P (ATT_TILE).
template <typename TA>
__device__ void attention_cached(TA* out, const TA* k_cache, const TA* v_cache, const TA* qkv,
                                 const unsigned int* seq, const unsigned int* pos, int R, int B, int T_max, int NH,
                                 int C, float scale) {
    DYNAMIC_SHARED(float, smem);
    const int hs = C / NH;
    float* Qs = smem;
    float* Ps = Qs + hs;
    const int r = blockIdx.x, h = blockIdx.y, lane = threadIdx.x % WARP_SIZE;
    if (r >= R) return;  // uniform across the block
    const long long hoff = static_cast<long long>(h) * hs;
    TA* o = out + static_cast<long long>(r) * C + hoff;
    const unsigned int s = seq[r], p = pos[r];
    if (s >= static_cast<unsigned int>(B) || p >= static_cast<unsigned int>(T_max)) {
        for (int d = lane; d < hs; d += WARP_SIZE) store(o + d, __uint_as_float(0x7fc00000u));
        return;
    }
    const int n = static_cast<int>(p) + 1;
    const TA* kb = k_cache + static_cast<long long>(s) * T_max * C + hoff;
    const TA* vb = v_cache + static_cast<long long>(s) * T_max * C + hoff;
    for (int d = lane; d < hs; d += WARP_SIZE) Qs[d] = to_f32(qkv[static_cast<long long>(r) * 3 * C + hoff + d]);
    __syncwarp();

    float m = att_neg_inf(), l = 0.0f;
    float acc[ATT_MAX_PER_LANE];
    for (int k = 0; k < ATT_MAX_PER_LANE; ++k) acc[k] = 0.0f;
    for (int j0 = 0; j0 < n; j0 += ATT_TILE) {
        const int j = j0 + lane;
        float sc = att_neg_inf();
        if (j < n) {
            const TA* kr = kb + static_cast<long long>(j) * C;
            float dot = 0.0f;
            for (int d = 0; d < hs; ++d) dot += Qs[d] * to_f32(kr[d]);
            sc = dot * scale;
        }
        const float m_new = fmaxf(m, warp_reduce_max(sc));
        const float pr = expf(sc - m_new);
        const float corr = expf(m - m_new);
        l = l * corr + warp_reduce_sum(pr);
        m = m_new;
        __syncwarp();  // the previous tile's reads of Ps are done
        Ps[lane] = pr;
        __syncwarp();
        const int nj = min(ATT_TILE, n - j0);
        for (int k = 0; k < ATT_MAX_PER_LANE; ++k) {
            const int d = lane + k * WARP_SIZE;
            if (d >= hs) break;
            float a = acc[k] * corr;
            for (int jj = 0; jj < nj; ++jj) a += Ps[jj] * to_f32(vb[static_cast<long long>(j0 + jj) * C + d]);
            acc[k] = a;
        }
    }
    const float inv = 1.0f / l;
    for (int k = 0; k < ATT_MAX_PER_LANE; ++k) {
        const int d = lane + k * WARP_SIZE;
        if (d < hs) store(o + d, acc[k] * inv);
    }
}

// ---- entry points: activations (qkv, out, dqkv, the caches) in f32 or bf16 -------------------
// Scores, probabilities, lse, dsum and the incoming gradient dout stay f32 in both; a bf16 entry
// point widens what it loads into shared memory and rounds once on the store.

extern "C" __global__ void attention_forward_f32(float* out, float* lse, const float* qkv, int T, int NH, int C,
                                                 float scale) {
    attention_forward(out, lse, qkv, T, NH, C, scale);
}
extern "C" __global__ void attention_forward_bf16(bf16_t* out, float* lse, const bf16_t* qkv, int T, int NH, int C,
                                                  float scale) {
    attention_forward(out, lse, qkv, T, NH, C, scale);
}
extern "C" __global__ void attention_backward_dq_f32(float* dqkv, float* dsum, const float* dout, const float* qkv,
                                                     const float* out, const float* lse, int T, int NH, int C,
                                                     float scale) {
    attention_backward_dq(dqkv, dsum, dout, qkv, out, lse, T, NH, C, scale);
}
extern "C" __global__ void attention_backward_dq_bf16(bf16_t* dqkv, float* dsum, const float* dout,
                                                      const bf16_t* qkv, const bf16_t* out, const float* lse, int T,
                                                      int NH, int C, float scale) {
    attention_backward_dq(dqkv, dsum, dout, qkv, out, lse, T, NH, C, scale);
}
extern "C" __global__ void attention_backward_dkv_f32(float* dqkv, const float* dsum, const float* dout,
                                                      const float* qkv, const float* lse, int T, int NH, int C,
                                                      float scale) {
    attention_backward_dkv(dqkv, dsum, dout, qkv, lse, T, NH, C, scale);
}
extern "C" __global__ void attention_backward_dkv_bf16(bf16_t* dqkv, const float* dsum, const float* dout,
                                                       const bf16_t* qkv, const float* lse, int T, int NH, int C,
                                                       float scale) {
    attention_backward_dkv(dqkv, dsum, dout, qkv, lse, T, NH, C, scale);
}
extern "C" __global__ void attention_cache_store_f32(float* k_cache, float* v_cache, const float* qkv,
                                                     const unsigned int* seq, const unsigned int* pos, int R, int B,
                                                     int T_max, int C) {
    attention_cache_store(k_cache, v_cache, qkv, seq, pos, R, B, T_max, C);
}
extern "C" __global__ void attention_cache_store_bf16(bf16_t* k_cache, bf16_t* v_cache, const bf16_t* qkv,
                                                      const unsigned int* seq, const unsigned int* pos, int R, int B,
                                                      int T_max, int C) {
    attention_cache_store(k_cache, v_cache, qkv, seq, pos, R, B, T_max, C);
}
extern "C" __global__ void attention_cached_f32(float* out, const float* k_cache, const float* v_cache,
                                                const float* qkv, const unsigned int* seq, const unsigned int* pos,
                                                int R, int B, int T_max, int NH, int C, float scale) {
    attention_cached(out, k_cache, v_cache, qkv, seq, pos, R, B, T_max, NH, C, scale);
}
extern "C" __global__ void attention_cached_bf16(bf16_t* out, const bf16_t* k_cache, const bf16_t* v_cache,
                                                 const bf16_t* qkv, const unsigned int* seq, const unsigned int* pos,
                                                 int R, int B, int T_max, int NH, int C, float scale) {
    attention_cached(out, k_cache, v_cache, qkv, seq, pos, R, B, T_max, NH, C, scale);
}

// Token + position embeddings of GPT-2: the device form of `backend::cpu::encoder` (training,
// positions implied by a (B,T) layout) and `backend::cpu::generation::encoder_forward_at`
// (decoding, one position per row). Shapes: N = B*T (or R) rows, T positions per sequence,
// C channels, V vocabulary rows of wte, P position rows of wpe; every matrix is row-major.
//
// All three kernels are elementwise over the N*C outputs (or dout values) with a grid-stride
// loop, so consecutive threads touch consecutive channels of one row: the reads of wte/wpe and
// the writes of out are coalesced whatever C is.
#include "common.cuh"

// The NaN that marks an output whose id or position is out of range: the CPU oracle panics on
// such an index, a kernel cannot, so it refuses to read out of bounds and makes the row visibly
// wrong instead.
#define ENC_NAN __uint_as_float(0x7fc00000u)

// out[r, c] = wte[ids[r], c] + wpe[r % T, c] for r < N.
extern "C" __global__ void encoder_forward_f32(float* out, const unsigned int* ids, const float* wte,
                                               const float* wpe, long long N, int T, int C, int V) {
    const long long total = N * C;
    const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
    for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
        const long long r = i / C;
        const int c = static_cast<int>(i - r * C);
        const unsigned int id = ids[r];
        const long long t = r % T;
        out[i] = id < static_cast<unsigned int>(V) ? wte[static_cast<long long>(id) * C + c] + wpe[t * C + c] : ENC_NAN;
    }
}

// out[r, c] = wte[ids[r], c] + wpe[pos[r], c] for r < R: every decoded row at its own position.
extern "C" __global__ void encoder_forward_at_f32(float* out, const unsigned int* ids, const unsigned int* pos,
                                                  const float* wte, const float* wpe, long long R, int C, int V,
                                                  int P) {
    const long long total = R * C;
    const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
    for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
        const long long r = i / C;
        const int c = static_cast<int>(i - r * C);
        const unsigned int id = ids[r];
        const unsigned int p = pos[r];
        const bool ok = id < static_cast<unsigned int>(V) && p < static_cast<unsigned int>(P);
        out[i] = ok ? wte[static_cast<long long>(id) * C + c] + wpe[static_cast<long long>(p) * C + c] : ENC_NAN;
    }
}

// dwte[ids[r], c] += dout[r, c] and dwpe[r % T, c] += dout[r, c], accumulated with atomicAdd:
// several rows share a token (and B rows share each position), and atomics let every dout
// value be read once, coalesced, without sorting the ids. The price: on a GPU the order in
// which the rows of one token (or position) are added is not fixed, so dwte/dwpe are not
// bit-reproducible from run to run (they agree to f32 rounding of those sums). A row with an
// out-of-range id adds nothing to dwte (the forward already wrote NaN for it); its dwpe share
// is still added.
extern "C" __global__ void encoder_backward_f32(float* dwte, float* dwpe, const float* dout, const unsigned int* ids,
                                                long long N, int T, int C, int V) {
    const long long total = N * C;
    const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
    for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
        const long long r = i / C;
        const int c = static_cast<int>(i - r * C);
        const unsigned int id = ids[r];
        const float d = dout[i];
        if (id < static_cast<unsigned int>(V)) atomicAdd(&dwte[static_cast<long long>(id) * C + c], d);
        atomicAdd(&dwpe[(r % T) * C + c], d);
    }
}

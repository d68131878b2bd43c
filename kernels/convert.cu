// Conversions between f32 and bf16 buffers: how the bf16 compute copy of an f32 master weight is
// made after every optimizer step, and how a lone f32 GEMM operand joins a bf16 product. The
// rounding is `f32_to_bf16` (to nearest, ties to even), bit for bit the host's
// `precision::f32_to_bf16`, its oracle. One template for both directions: grid-stride over
// 8-value groups moved as 16-byte packs (two f32 packs, one bf16 pack), then a scalar tail.
#include "common.cuh"

// Group g's 8 values of a buffer of T: packs 2g, 2g+1 of f32, pack g of bf16.
__device__ __forceinline__ void load8(const float* p, long long g, float (&v)[8]) {
    float lo[4], hi[4];
    unpack16(reinterpret_cast<const pack16*>(p)[2 * g], lo);
    unpack16(reinterpret_cast<const pack16*>(p)[2 * g + 1], hi);
    for (int j = 0; j < 4; j++) {
        v[j] = lo[j];
        v[4 + j] = hi[j];
    }
}
__device__ __forceinline__ void load8(const bf16_t* p, long long g, float (&v)[8]) {
    unpack16(reinterpret_cast<const pack16*>(p)[g], v);
}
__device__ __forceinline__ void store8(float* p, long long g, const float (&v)[8]) {
    float lo[4], hi[4];
    for (int j = 0; j < 4; j++) {
        lo[j] = v[j];
        hi[j] = v[4 + j];
    }
    reinterpret_cast<pack16*>(p)[2 * g] = repack16(lo);
    reinterpret_cast<pack16*>(p)[2 * g + 1] = repack16(hi);
}
__device__ __forceinline__ void store8(bf16_t* p, long long g, const float (&v)[8]) {
    reinterpret_cast<pack16*>(p)[g] = repack16(v);
}

// out[i] = inp[i] as TO, i < n.
template <typename TO, typename TI>
__device__ void convert(TO* out, const TI* inp, long long n) {
    const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
    const long long first = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    const long long groups = n / 8;
    for (long long g = first; g < groups; g += stride) {
        float v[8];
        load8(inp, g, v);
        store8(out, g, v);
    }
    for (long long i = groups * 8 + first; i < n; i += stride) store(out + i, to_f32(inp[i]));
}

extern "C" __global__ void convert_f32_bf16(bf16_t* out, const float* inp, long long n) { convert(out, inp, n); }
extern "C" __global__ void convert_bf16_f32(float* out, const bf16_t* inp, long long n) { convert(out, inp, n); }

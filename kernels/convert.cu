// Conversions between f32 and bf16 buffers: how the bf16 compute copy of an f32 master weight is
// made after every optimizer step, and how a lone f32 GEMM operand joins a bf16 product. The
// rounding is `f32_to_bf16` (to nearest, ties to even), bit for bit the host's
// `precision::f32_to_bf16`, its oracle. Grid-stride over 8-value groups moved as 16-byte
// packs (two f32 packs in, one bf16 pack out), then a scalar tail.
#include "common.cuh"

extern "C" __global__ void convert_f32_bf16(bf16_t* out, const float* inp, long long n) {
    const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
    const long long groups = n / 8;
    const pack16* in16 = reinterpret_cast<const pack16*>(inp);
    pack16* out16 = reinterpret_cast<pack16*>(out);
    for (long long g = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; g < groups; g += stride) {
        float v[8];
        float lo[4], hi[4];
        unpack16(in16[2 * g], lo);
        unpack16(in16[2 * g + 1], hi);
        for (int j = 0; j < 4; j++) {
            v[j] = lo[j];
            v[4 + j] = hi[j];
        }
        out16[g] = repack16(v);
    }
    for (long long i = groups * 8 + static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
        out[i] = f32_to_bf16(inp[i]);
    }
}

extern "C" __global__ void convert_bf16_f32(float* out, const bf16_t* inp, long long n) {
    const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
    const long long groups = n / 8;
    const pack16* in16 = reinterpret_cast<const pack16*>(inp);
    pack16* out16 = reinterpret_cast<pack16*>(out);
    for (long long g = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; g < groups; g += stride) {
        float v[8];
        unpack16(in16[g], v);
        float lo[4], hi[4];
        for (int j = 0; j < 4; j++) {
            lo[j] = v[j];
            hi[j] = v[4 + j];
        }
        out16[2 * g] = repack16(lo);
        out16[2 * g + 1] = repack16(hi);
    }
    for (long long i = groups * 8 + static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
        out[i] = bf16_to_f32(inp[i]);
    }
}

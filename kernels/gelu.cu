// GPT-2's tanh-approximated GELU ("gelu_new"), the device form of `backend::cpu::gelu`.
// Elementwise over N values with a grid-stride loop (coalesced, any N): 16-byte packs (4 f32 or
// 8 bf16) first, then a scalar tail. The math is f32 whatever the storage; bf16 entry points
// read bf16 and round the result once on the store. The oracle's tanh is a polynomial exp
// (`cpu::fastmath`, within 2e-7 absolute), the device's is tanhf: results agree to a few ulps of
// the tanh, not bit for bit.
#include "common.cuh"

#define GELU_SQRT_2_OVER_PI 0.7978845608f
#define GELU_COEF 0.044715f

__device__ __forceinline__ float gelu_value(float x) {
    const float u = GELU_SQRT_2_OVER_PI * (x + GELU_COEF * x * x * x);
    return 0.5f * x * (1.0f + tanhf(u));
}

// d/dx of the tanh form (not of the exact erf GELU).
__device__ __forceinline__ float gelu_slope(float x) {
    const float u = GELU_SQRT_2_OVER_PI * (x + GELU_COEF * x * x * x);
    const float th = tanhf(u);
    const float sech2 = 1.0f - th * th;
    const float du = GELU_SQRT_2_OVER_PI * (1.0f + 3.0f * GELU_COEF * x * x);
    return 0.5f * (1.0f + th) + 0.5f * x * sech2 * du;
}

// out = gelu(inp). out may alias inp (each pack is read before the same thread writes it).
template <typename T>
__device__ void gelu_forward(T* out, const T* inp, long long n) {
    constexpr int V = PACK_VALUES(T);
    const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
    const long long first = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    const long long packs = n / V;
    for (long long p = first; p < packs; p += stride) {
        float v[V];
        unpack16(reinterpret_cast<const pack16*>(inp)[p], v);
        for (int j = 0; j < V; j++) v[j] = gelu_value(v[j]);
        reinterpret_cast<pack16*>(out)[p] = repack16(v);
    }
    for (long long i = packs * V + first; i < n; i += stride) store(out + i, gelu_value(to_f32(inp[i])));
}

// In place: d *= gelu'(inp).
template <typename T>
__device__ void gelu_backward(T* d, const T* inp, long long n) {
    constexpr int V = PACK_VALUES(T);
    const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
    const long long first = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    const long long packs = n / V;
    for (long long p = first; p < packs; p += stride) {
        float x[V], g[V];
        unpack16(reinterpret_cast<const pack16*>(inp)[p], x);
        unpack16(reinterpret_cast<const pack16*>(d)[p], g);
        for (int j = 0; j < V; j++) g[j] *= gelu_slope(x[j]);
        reinterpret_cast<pack16*>(d)[p] = repack16(g);
    }
    for (long long i = packs * V + first; i < n; i += stride) store(d + i, to_f32(d[i]) * gelu_slope(to_f32(inp[i])));
}

extern "C" __global__ void gelu_forward_f32(float* out, const float* inp, long long N) { gelu_forward(out, inp, N); }
extern "C" __global__ void gelu_forward_bf16(bf16_t* out, const bf16_t* inp, long long N) { gelu_forward(out, inp, N); }
extern "C" __global__ void gelu_backward_f32(float* d, const float* inp, long long N) { gelu_backward(d, inp, N); }
extern "C" __global__ void gelu_backward_bf16(bf16_t* d, const bf16_t* inp, long long N) { gelu_backward(d, inp, N); }

// GPT-2's tanh-approximated GELU ("gelu_new"), the device form of `backend::cpu::gelu`.
// Elementwise over N values with a grid-stride loop (coalesced, any N). The oracle's tanh is a
// polynomial exp (`cpu::fastmath`, within 2e-7 absolute), the device's is tanhf: results agree
// to a few ulps of the tanh, not bit for bit.
#include "common.cuh"

#define GELU_SQRT_2_OVER_PI 0.7978845608f
#define GELU_COEF 0.044715f

// out = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). out may alias inp (each element is
// read before it is written by the same thread).
extern "C" __global__ void gelu_forward_f32(float* out, const float* inp, long long N) {
    const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
    for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < N; i += stride) {
        const float x = inp[i];
        const float u = GELU_SQRT_2_OVER_PI * (x + GELU_COEF * x * x * x);
        out[i] = 0.5f * x * (1.0f + tanhf(u));
    }
}

// In place: d *= gelu'(x), with the derivative of the tanh form (not of the exact erf GELU).
extern "C" __global__ void gelu_backward_f32(float* d, const float* inp, long long N) {
    const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
    for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < N; i += stride) {
        const float x = inp[i];
        const float u = GELU_SQRT_2_OVER_PI * (x + GELU_COEF * x * x * x);
        const float th = tanhf(u);
        const float sech2 = 1.0f - th * th;
        const float du = GELU_SQRT_2_OVER_PI * (1.0f + 3.0f * GELU_COEF * x * x);
        d[i] *= 0.5f * (1.0f + th) + 0.5f * x * sech2 * du;
    }
}

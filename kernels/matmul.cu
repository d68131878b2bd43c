// The linear layer's bias gradient; the products themselves go through cuBLASLt (the device
// form of `backend::cpu::matmul`). Shapes: (rows, cols) = (N, OC) of the layer's output.
#include "common.cuh"

// Threads per block of bias_backward_{f32,bf16}: 32 columns (one warp-wide, coalesced row segment)
// by BIAS_ROW_GROUPS row groups.
#define BIAS_ROW_GROUPS 8

// dbias[c] += sum_r dout[r, c]. One block per 32 columns (grid ceil(cols/32)), block of
// 32 x BIAS_ROW_GROUPS threads: lane l owns column 32*blockIdx.x + l, warp w sums rows w,
// w + 8, ... (a warp reads 32 consecutive floats of one row: coalesced). The 8 partial sums of a
// column are then added in warp order from shared memory, so the result is deterministic (no
// atomics); it differs from the oracle's row-order sum only by f32 rounding.
// dout is f32 or bf16 (T); dbias, the master gradient, is always f32.
template <typename T>
__device__ void bias_backward(float* dbias, const T* dout, int rows, int cols) {
    __shared__ float part[BIAS_ROW_GROUPS][WARP_SIZE];
    const int lane = threadIdx.x % WARP_SIZE;
    const int grp = threadIdx.x / WARP_SIZE;
    const int c = blockIdx.x * WARP_SIZE + lane;
    float s = 0.0f;
    if (c < cols) {
        for (int r = grp; r < rows; r += BIAS_ROW_GROUPS) s += to_f32(dout[static_cast<long long>(r) * cols + c]);
    }
    part[grp][lane] = s;
    __syncthreads();  // every group's partial is read by group 0 below
    if (grp == 0 && c < cols) {
        float total = 0.0f;
        for (int g = 0; g < BIAS_ROW_GROUPS; ++g) total += part[g][lane];
        dbias[c] += total;
    }
}

extern "C" __global__ void bias_backward_f32(float* dbias, const float* dout, int rows, int cols) {
    bias_backward(dbias, dout, rows, cols);
}
extern "C" __global__ void bias_backward_bf16(float* dbias, const bf16_t* dout, int rows, int cols) {
    bias_backward(dbias, dout, rows, cols);
}

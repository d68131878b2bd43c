// Row-wise reductions over a row-major (rows, cols) f32 matrix: one block per row, blockDim.x a
// multiple of 32 (at most 1024), any cols. Launch: grid (rows, 1, 1), block (threads, 1, 1),
// no dynamic shared memory.
#include "common.cuh"

// out[r] = sum_c inp[r, c]
extern "C" __global__ void row_sum_f32(float* out, const float* inp, int rows, int cols) {
    const int r = blockIdx.x;
    if (r >= rows) return;  // uniform across the block
    const float* x = inp + static_cast<long long>(r) * cols;
    float acc = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) acc += x[c];
    acc = block_reduce_sum(acc);
    if (threadIdx.x == 0) out[r] = acc;
}

// out[r] = max_c inp[r, c] (-inf for an empty row)
extern "C" __global__ void row_max_f32(float* out, const float* inp, int rows, int cols) {
    const int r = blockIdx.x;
    if (r >= rows) return;
    const float* x = inp + static_cast<long long>(r) * cols;
    float acc = -__uint_as_float(0x7f800000u);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) acc = fmaxf(acc, x[c]);
    acc = block_reduce_max(acc);
    if (threadIdx.x == 0) out[r] = acc;
}

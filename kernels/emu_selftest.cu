// Kernels that exist only to test the emulator (tests/emulator.rs), not used by any op.
// `selftest_wrong_*` kernels are NEGATIVE CONTROLS: deliberately wrong, so a test can show
// that the emulator reports a wrong kernel as wrong.
#include "common.cuh"

// NEGATIVE CONTROL: row_sum_f32 (reduce.cu) with a bug: the block reduction drops the last
// warp's partial sum (`lane < nwarps - 1`). Wrong whenever the last warp's columns are non-zero.
extern "C" __global__ void selftest_wrong_row_sum_f32(float* out, const float* inp, int rows, int cols) {
    __shared__ float partial[WARP_SIZE];
    const int r = blockIdx.x;
    if (r >= rows) return;
    const float* x = inp + static_cast<long long>(r) * cols;
    float acc = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) acc += x[c];
    const int lane = threadIdx.x % WARP_SIZE;
    const int warp = threadIdx.x / WARP_SIZE;
    const int nwarps = blockDim.x / WARP_SIZE;
    acc = warp_reduce_sum(acc);
    if (lane == 0) partial[warp] = acc;
    __syncthreads();
    acc = lane < nwarps - 1 ? partial[lane] : 0.0f;  // BUG (on purpose): should be `lane < nwarps`
    acc = warp_reduce_sum(acc);
    if (threadIdx.x == 0) out[r] = acc;
}

// One sum per warp of a 1-D launch: out[global_warp] = sum of the warp's 32 inputs.
extern "C" __global__ void selftest_warp_sum_f32(float* out, const float* inp) {
    const unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    const float s = warp_reduce_sum(inp[i]);
    if (threadIdx.x % WARP_SIZE == 0) out[i / WARP_SIZE] = s;
}

// Each shuffle flavour on lane ids, 4 outputs per thread:
// [down by 1, up by 3, broadcast of lane 5, xor 16 with width 8 (a later group reads as the
// caller's own value, an earlier one is read)].
extern "C" __global__ void selftest_shuffles(unsigned int* out) {
    const unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    const unsigned int lane = threadIdx.x % WARP_SIZE;
    out[4 * i + 0] = __shfl_down_sync(FULL_MASK, lane, 1);
    out[4 * i + 1] = __shfl_up_sync(FULL_MASK, lane, 3);
    out[4 * i + 2] = __shfl_sync(FULL_MASK, lane * 10, 5);
    out[4 * i + 3] = __shfl_xor_sync(FULL_MASK, lane, 16, 8);
}

// Reverses each block's `n` values through dynamic shared memory (shared_bytes >= 4n,
// blockDim.x >= n): out[b*n + t] = inp[b*n + n-1-t].
extern "C" __global__ void selftest_reverse_dyn_f32(float* out, const float* inp, int n) {
    DYNAMIC_SHARED(float, buf);
    const int t = threadIdx.x;
    const long long base = static_cast<long long>(blockIdx.x) * n;
    if (t < n) buf[t] = inp[base + t];
    __syncthreads();
    if (t < n) out[base + t] = buf[n - 1 - t];
}

// Reads one value of dynamic shared memory without writing it first (the emulator poisons it).
extern "C" __global__ void selftest_read_dyn_uninit(unsigned int* out) {
    DYNAMIC_SHARED(unsigned int, buf);
    if (threadIdx.x == 0) out[blockIdx.x] = buf[0];
}

// Atomics across blocks: sum[0] += every input, counts[i % nbins] += 1, max[0] = max input.
extern "C" __global__ void selftest_atomics(float* sum, unsigned int* counts, float* max, const float* inp, int n,
                                            int nbins) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    atomicAdd(sum, inp[i]);
    atomicAdd(&counts[i % nbins], 1u);
    atomic_max_f32(max, inp[i]);
}

// f32 -> bf16 (round to nearest even) -> f32 of n values, plus the raw bf16 bits.
extern "C" __global__ void selftest_bf16_roundtrip(unsigned short* bits, float* back, const float* inp, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const bf16_t h = f32_to_bf16(inp[i]);
    bits[i] = h;
    back[i] = bf16_to_f32(h);
}

// Index bookkeeping of a 3-D launch: thread g (block-linear, then thread-linear, x fastest)
// writes its threadIdx, blockIdx, blockDim, gridDim, each packed as x | y << 10 | z << 20.
extern "C" __global__ void selftest_indices(unsigned int* out) {
    const unsigned int block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    const unsigned int thread = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    const unsigned int g = block * (blockDim.x * blockDim.y * blockDim.z) + thread;
    out[4 * g + 0] = threadIdx.x | threadIdx.y << 10 | threadIdx.z << 20;
    out[4 * g + 1] = blockIdx.x | blockIdx.y << 10 | blockIdx.z << 20;
    out[4 * g + 2] = blockDim.x | blockDim.y << 10 | blockDim.z << 20;
    out[4 * g + 3] = gridDim.x | gridDim.y << 10 | gridDim.z << 20;
}

// DELIBERATELY BROKEN: a divergent barrier. Lane 0 of every warp waits at `__syncthreads()`
// while its warp-mates wait at a shuffle, so neither barrier can complete (undefined behaviour
// on the device, usually a hang). The emulator must report it (kDivergentBarrier), not hang.
extern "C" __global__ void selftest_divergent_barrier(unsigned int* out) {
    unsigned int v = threadIdx.x;
    if (threadIdx.x % WARP_SIZE == 0) {
        __syncthreads();
    } else {
        v = __shfl_xor_sync(FULL_MASK, v, 1);
    }
    out[blockIdx.x * blockDim.x + threadIdx.x] = v;
}

// Deliberately racy (a missing __syncthreads): each thread publishes its index in dynamic shared
// memory (poisoned before every block), then reads its right-hand neighbour's slot. On a GPU
// the result is unspecified; on the emulator it depends on the thread order, which is what
// shows that both orders are really run (tests/emulator.rs).
extern "C" __global__ void selftest_missing_barrier(unsigned int* out) {
    DYNAMIC_SHARED(unsigned int, slot);
    const unsigned int t = threadIdx.x;
    slot[t] = t;
    out[t] = slot[(t + 1) % blockDim.x];
}

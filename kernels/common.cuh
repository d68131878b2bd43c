// The one header every kernel includes: warp/block reductions, bf16 helpers, dynamic shared
// memory. It must compile three ways with no other header: NVRTC (no CUDA headers at all),
// nvcc, and the host emulator (kernels/emu/emulate.h, which defines GEPA_KERNEL_EMU).
#pragma once

#define WARP_SIZE 32
#define FULL_MASK 0xffffffffu

// DYNAMIC_SHARED(type, name) declares `type* name` pointing at the launch's dynamic shared
// memory (the `shared_bytes` of the launch), 16-byte aligned.
#ifdef GEPA_KERNEL_EMU
#define DYNAMIC_SHARED(type, name) type* name = reinterpret_cast<type*>(emu::dynamic_shared())
#else
#define DYNAMIC_SHARED(type, name)                                  \
    extern __shared__ __align__(16) unsigned char gepa_dyn_smem_[]; \
    type* name = reinterpret_cast<type*>(gepa_dyn_smem_)
#endif

// ---- warp reductions (every lane gets the result) ------------------------------------------

__device__ __forceinline__ float warp_reduce_sum(float v) {
    for (int offset = WARP_SIZE / 2; offset > 0; offset >>= 1) v += __shfl_xor_sync(FULL_MASK, v, offset);
    return v;
}

__device__ __forceinline__ float warp_reduce_max(float v) {
    for (int offset = WARP_SIZE / 2; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, offset));
    return v;
}

// ---- block reductions over a 1-D block (blockDim.x a multiple of 32, at most 1024) -----------
// Every thread must call them (they contain __syncthreads) and every thread gets the result.
// Safe to call several times in a row: the leading barrier keeps a call from overwriting the
// partials a previous call is still reading.

__device__ __forceinline__ float block_reduce_sum(float v) {
    __shared__ float partial[WARP_SIZE];
    const int lane = threadIdx.x % WARP_SIZE;
    const int warp = threadIdx.x / WARP_SIZE;
    const int nwarps = blockDim.x / WARP_SIZE;
    v = warp_reduce_sum(v);
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    v = lane < nwarps ? partial[lane] : 0.0f;
    return warp_reduce_sum(v);
}

__device__ __forceinline__ float block_reduce_max(float v) {
    __shared__ float partial[WARP_SIZE];
    const int lane = threadIdx.x % WARP_SIZE;
    const int warp = threadIdx.x / WARP_SIZE;
    const int nwarps = blockDim.x / WARP_SIZE;
    v = warp_reduce_max(v);
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    v = lane < nwarps ? partial[lane] : -__uint_as_float(0x7f800000u);  // -inf, no math.h
    return warp_reduce_max(v);
}

// ---- atomics missing from the device's set ---------------------------------------------------

// atomicMax for f32 through compare-and-swap on the bits; returns the old value. NaN inputs
// are ignored (a comparison with NaN is false).
__device__ __forceinline__ float atomic_max_f32(float* addr, float v) {
    unsigned int* bits = reinterpret_cast<unsigned int*>(addr);
    unsigned int old = *bits;
    while (__uint_as_float(old) < v) {
        const unsigned int seen = atomicCAS(bits, old, __float_as_uint(v));
        if (seen == old) break;
        old = seen;
    }
    return __uint_as_float(old);
}

// ---- bf16 carried as unsigned short ----------------------------------------------------------

typedef unsigned short bf16_t;

__device__ __forceinline__ float bf16_to_f32(bf16_t h) { return __uint_as_float(static_cast<unsigned int>(h) << 16); }

// Round to nearest, ties to even; NaN stays a (quiet) NaN, overflow rounds to infinity.
__device__ __forceinline__ bf16_t f32_to_bf16(float f) {
    const unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<bf16_t>((u >> 16) | 0x0040u);
    const unsigned int rounding = 0x7fffu + ((u >> 16) & 1u);
    return static_cast<bf16_t>((u + rounding) >> 16);
}

// ---- one source, two storage types ------------------------------------------------------------
// Kernels are templates over the storage type T of their activations (float or bf16_t) and
// compute in f32; each `{op}_{dtype}` entry point instantiates one. `to_f32` widens (exact for
// bf16), `store` rounds to T (to nearest even for bf16).

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(bf16_t x) { return bf16_to_f32(x); }
__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(bf16_t* p, float v) { *p = f32_to_bf16(v); }

// 16 bytes moved by one vector load or store (ld.global.v4.u32): 4 f32 or 8 bf16. Buffers start
// 16-byte aligned (cudaMalloc; the emulator's allocations too), so pack i of a buffer is aligned.
struct alignas(16) pack16 {
    unsigned int w[4];
};

// Values per pack of T.
#define PACK_VALUES(T) (16 / static_cast<int>(sizeof(T)))

__device__ __forceinline__ void unpack16(const pack16& p, float (&v)[4]) {
    for (int j = 0; j < 4; j++) v[j] = __uint_as_float(p.w[j]);
}
__device__ __forceinline__ void unpack16(const pack16& p, float (&v)[8]) {
    for (int j = 0; j < 4; j++) {
        v[2 * j] = bf16_to_f32(static_cast<bf16_t>(p.w[j] & 0xffffu));
        v[2 * j + 1] = bf16_to_f32(static_cast<bf16_t>(p.w[j] >> 16));
    }
}
__device__ __forceinline__ pack16 repack16(const float (&v)[4]) {
    pack16 p;
    for (int j = 0; j < 4; j++) p.w[j] = __float_as_uint(v[j]);
    return p;
}
__device__ __forceinline__ pack16 repack16(const float (&v)[8]) {
    pack16 p;
    for (int j = 0; j < 4; j++) {
        p.w[j] = static_cast<unsigned int>(f32_to_bf16(v[2 * j])) |
                 (static_cast<unsigned int>(f32_to_bf16(v[2 * j + 1])) << 16);
    }
    return p;
}

// Host-only emulation of the CUDA subset the kernels under kernels/ use, so the exact .cu
// sources compile with a host C++20 compiler (g++/clang++) and run on the CPU in CI.
//
// build.rs includes this header, then one kernels/*.cu file, in a generated host .cpp, and
// adds one `extern "C" int emu_<kernel>(...)` entry point per `extern "C" __global__` kernel;
// src/backend/emu/ calls those with the same `void**` argument array cuLaunchKernel takes.
//
// Execution model
// - A launch runs its blocks one after another, in x-fastest order (x, then y, then z).
// - A block runs with one OS thread per CUDA thread (a pool of blockDim.x*y*z threads created
//   once per launch and reused for every block). `threadIdx`, `blockIdx`, `blockDim`,
//   `gridDim` are `thread_local` variables set before each block.
// - `__syncthreads()` is a `std::barrier` shared by the block's threads. A thread that returns
//   from the kernel drops out of that barrier (as exited threads do on the device), so an
//   early `return` before a later `__syncthreads()` does not deadlock.
// - Warps are groups of 32 consecutive linear thread ids (x fastest). A warp shuffle writes
//   the caller's value into the warp's exchange slot, waits on the warp's barrier, reads the
//   source lane's slot, and waits again: the warp runs in lockstep at every shuffle.
// - `__shared__` is `static`: one instance per (translation unit, function), shared by all OS
//   threads, reused by every block (blocks never run at the same time). Dynamic shared memory
//   (DYNAMIC_SHARED in common.cuh) is a per-launch host buffer, filled with 0xFF bytes (a NaN
//   for f32) before every block, so reads of never-written dynamic shared memory show up.
// - Launches are serialised process-wide by one mutex (static shared memory is global state).
// - Atomics are real host atomics (std::atomic_ref), because a block's threads run concurrently.
// - Kernel parameters are copied out of the `void**` array once, at launch, as on the device.
//
// What it does NOT model (a kernel passing here can still be wrong or slow on a GPU):
// - timing, occupancy, register pressure, memory coalescing, caches, shared-memory bank
//   conflicts: it proves logic and indexing, not speed;
// - concurrency between blocks: blocks run sequentially, so inter-block races (e.g. a block
//   reading another block's output without atomics or a grid sync) are invisible; atomics are
//   only tested for intra-block contention and for inter-block accumulation;
// - warp divergence semantics: the `mask` argument of the *_sync intrinsics is ignored; every
//   live lane of a warp must reach the same shuffle (independent thread scheduling, partial
//   masks, `__syncwarp` with subsets are not modelled); reading a lane that does not exist
//   (partial last warp) or has exited gives a poison value (all bits set), not an error;
//   divergent barriers or shuffles (some threads at `__syncthreads`, their warp-mates at a
//   shuffle) hang the emulator instead of failing;
// - data races inside a block other than those a missing barrier turns into wrong results
//   by chance (OS threads interleave arbitrarily, so a racy kernel may pass or fail);
// - out-of-bounds accesses: pointers are plain host pointers, nothing is bounds-checked
//   (run the tests under a sanitizer to catch them);
// - the contents of static `__shared__` arrays at block start: they keep the previous block's
//   values (the device gives undefined values), so read-before-write bugs on static shared
//   memory can pass; dynamic shared memory is poisoned instead;
// - floating point: host libm `expf`/`logf` etc. stand in for the device's (including the
//   `__expf`-style fast intrinsics), FMA contraction differs, so results match the device
//   to rounding, not bit for bit;
// - memory spaces (`__constant__`, `__ldg`, texture), streams, events, cooperative groups,
//   dynamic parallelism, and any device limit except threads per block (1024), grid y/z
//   (65535) and dynamic shared memory (48 KiB, the default without an opt-in attribute);
// - argument types: launch() checks the count and byte size of each argument against the
//   kernel's parameters, not their types (an f32 passed for an int is not caught).
#pragma once

#ifdef __CUDACC__
#error "kernels/emu/emulate.h is for host emulation only"
#endif

#include <atomic>
#include <barrier>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <math.h>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

// Tells common.cuh (and any kernel) that it is compiled for the host emulator.
#define GEPA_KERNEL_EMU 1

// ---- function and variable qualifiers ----------------------------------------------------
#define __global__
#define __host__
// `static` keeps helpers defined in several .cu files (or in common.cuh) from clashing at
// link time; `__device__ __forceinline__` becomes `static inline`.
#define __device__ static
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __shared__ static
#define __constant__ static
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)

// ---- thread and block indices --------------------------------------------------------------
struct uint3 {
    unsigned int x, y, z;
};
struct dim3 {
    unsigned int x = 1, y = 1, z = 1;
    constexpr dim3() = default;
    constexpr dim3(unsigned int x_, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

inline thread_local uint3 threadIdx{0, 0, 0};
inline thread_local uint3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim{};
inline thread_local dim3 gridDim{};
constexpr int warpSize = 32;

namespace emu {

constexpr unsigned int kMaxThreadsPerBlock = 1024;
constexpr unsigned int kMaxDynamicSharedBytes = 48 * 1024;
constexpr unsigned int kWarpSize = 32;

// Return codes of launch(), mirrored by src/backend/emu/.
constexpr int kOk = 0;
constexpr int kBadConfig = 1;
constexpr int kTooMuchSharedMemory = 2;
constexpr int kArgumentCount = 3;
constexpr int kArgumentSize = 4;
constexpr int kHostFailure = 5;

// One warp: an exchange slot per lane, a barrier over the warp's live lanes, and which lanes
// have exited (their slot reads as poison).
struct Warp {
    std::uint64_t slot[kWarpSize];
    std::atomic<bool> exited[kWarpSize];
    unsigned int lanes = 0;
    std::unique_ptr<std::barrier<>> bar;
};

// The state of the block being run: rebuilt by the launching thread between blocks, while
// every worker waits at the launch's start barrier.
struct Block {
    std::unique_ptr<std::barrier<>> sync;
    std::vector<std::unique_ptr<Warp>> warps;
    unsigned char* dynamic_shared = nullptr;
};

struct ThreadCtx {
    Block* block = nullptr;
    Warp* warp = nullptr;
    unsigned int lane = 0;
};
inline thread_local ThreadCtx ctx;

inline std::mutex& launch_mutex() {
    static std::mutex m;
    return m;
}

inline unsigned char* dynamic_shared() { return ctx.block->dynamic_shared; }

inline void syncthreads() { ctx.block->sync->arrive_and_wait(); }

// ---- warp shuffles -------------------------------------------------------------------------
constexpr std::uint64_t kPoison = ~std::uint64_t{0};

template <typename T>
inline std::uint64_t to_bits(T v) {
    static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
    std::uint64_t b = 0;
    std::memcpy(&b, &v, sizeof(T));
    return b;
}
template <typename T>
inline T from_bits(std::uint64_t b) {
    T v;
    std::memcpy(&v, &b, sizeof(T));
    return v;
}

// Every live lane publishes `v`; lane `src` (or the caller itself when src < 0) is read back.
template <typename T>
inline T exchange(T v, int src) {
    Warp& w = *ctx.warp;
    w.slot[ctx.lane] = to_bits(v);
    w.bar->arrive_and_wait();
    std::uint64_t out;
    if (src < 0) {
        out = w.slot[ctx.lane];
    } else if (static_cast<unsigned int>(src) >= w.lanes || w.exited[src].load(std::memory_order_relaxed)) {
        out = kPoison;
    } else {
        out = w.slot[src];
    }
    w.bar->arrive_and_wait();  // nobody overwrites a slot before every lane has read
    return from_bits<T>(out);
}

inline void thread_exit() {
    if (ctx.warp) {
        ctx.warp->exited[ctx.lane].store(true, std::memory_order_relaxed);
        ctx.warp->bar->arrive_and_drop();
    }
    ctx.block->sync->arrive_and_drop();
}

// ---- launch ----------------------------------------------------------------------------------
template <typename... Ps, std::size_t... I>
inline std::tuple<std::decay_t<Ps>...> read_args(void** args, std::index_sequence<I...>) {
    return std::tuple<std::decay_t<Ps>...>{*static_cast<std::decay_t<Ps>*>(args[I])...};
}

// Runs `kernel` over `grid` x `block` threads. `args[i]` points at the value of parameter i
// (cuLaunchKernel's convention); `sizes[i]` is that value's size in bytes, checked against the
// kernel's parameter types, and `nargs` their count.
template <typename... Ps>
int launch(void (*kernel)(Ps...), dim3 grid, dim3 block, unsigned int shared_bytes, void** args,
           const std::size_t* sizes, std::size_t nargs) noexcept {
    try {
        if (nargs != sizeof...(Ps)) return kArgumentCount;
        constexpr std::size_t expected[] = {sizeof(std::decay_t<Ps>)..., 0};
        for (std::size_t i = 0; i < nargs; ++i) {
            if (sizes[i] != expected[i]) return kArgumentSize;
        }
        const std::uint64_t threads = std::uint64_t{block.x} * block.y * block.z;
        if (threads == 0 || threads > kMaxThreadsPerBlock || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
            grid.y > 65535 || grid.z > 65535) {
            return kBadConfig;
        }
        if (shared_bytes > kMaxDynamicSharedBytes) return kTooMuchSharedMemory;

        auto params = read_args<Ps...>(args, std::index_sequence_for<Ps...>{});
        const unsigned int n = static_cast<unsigned int>(threads);
        std::lock_guard<std::mutex> lock(launch_mutex());

        // 16-byte aligned dynamic shared memory (at least one line so the pointer is valid).
        std::vector<std::uint64_t> dyn((shared_bytes + 15) / 16 * 2 + 2);
        unsigned char* dyn_ptr = reinterpret_cast<unsigned char*>(dyn.data());

        Block state;
        uint3 cur_block{0, 0, 0};
        bool done = false;
        std::barrier start(static_cast<std::ptrdiff_t>(n) + 1);
        std::barrier end(static_cast<std::ptrdiff_t>(n) + 1);

        auto worker = [&](unsigned int linear) {
            const uint3 tid{linear % block.x, (linear / block.x) % block.y, linear / (block.x * block.y)};
            for (;;) {
                start.arrive_and_wait();
                if (done) return;
                threadIdx = tid;
                blockIdx = cur_block;
                blockDim = block;
                gridDim = grid;
                ctx.block = &state;
                ctx.warp = state.warps[linear / kWarpSize].get();
                ctx.lane = linear % kWarpSize;
                std::apply(kernel, params);
                thread_exit();
                end.arrive_and_wait();
            }
        };

        std::vector<std::thread> pool;
        pool.reserve(n);
        try {
            for (unsigned int t = 0; t < n; ++t) pool.emplace_back(worker, t);
        } catch (...) {
            // Could not start every thread: release the ones that did, then report.
            const std::size_t started = pool.size();
            done = true;
            for (std::size_t i = started; i < n; ++i) (void)start.arrive();
            start.arrive_and_wait();
            for (auto& th : pool) th.join();
            return kHostFailure;
        }

        const unsigned int nwarps = (n + kWarpSize - 1) / kWarpSize;
        for (unsigned int z = 0; z < grid.z; ++z) {
            for (unsigned int y = 0; y < grid.y; ++y) {
                for (unsigned int x = 0; x < grid.x; ++x) {
                    // Workers are all waiting at `start`: rebuild the block's state.
                    cur_block = uint3{x, y, z};
                    state.sync = std::make_unique<std::barrier<>>(static_cast<std::ptrdiff_t>(n));
                    state.warps.clear();
                    for (unsigned int w = 0; w < nwarps; ++w) {
                        auto warp = std::make_unique<Warp>();
                        warp->lanes = std::min(kWarpSize, n - w * kWarpSize);
                        for (unsigned int l = 0; l < kWarpSize; ++l) {
                            warp->slot[l] = kPoison;
                            warp->exited[l].store(false, std::memory_order_relaxed);
                        }
                        warp->bar = std::make_unique<std::barrier<>>(static_cast<std::ptrdiff_t>(warp->lanes));
                        state.warps.push_back(std::move(warp));
                    }
                    std::memset(dyn_ptr, 0xFF, dyn.size() * sizeof(std::uint64_t));
                    state.dynamic_shared = dyn_ptr;
                    start.arrive_and_wait();
                    end.arrive_and_wait();
                }
            }
        }
        done = true;
        start.arrive_and_wait();
        for (auto& th : pool) th.join();
        return kOk;
    } catch (...) {
        return kHostFailure;
    }
}

}  // namespace emu

// ---- intrinsics ------------------------------------------------------------------------------
inline void __syncthreads() { emu::syncthreads(); }
inline void __syncwarp(unsigned int = 0xffffffffu) { emu::ctx.warp->bar->arrive_and_wait(); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }

template <typename T>
inline T __shfl_sync(unsigned int, T v, int src_lane, int width = warpSize) {
    const int lane = static_cast<int>(emu::ctx.lane);
    return emu::exchange(v, (lane & ~(width - 1)) + (src_lane & (width - 1)));
}
template <typename T>
inline T __shfl_xor_sync(unsigned int, T v, int lane_mask, int width = warpSize) {
    const int lane = static_cast<int>(emu::ctx.lane);
    const int src = lane ^ lane_mask;
    // A source in a later `width`-lane group leaves the value unchanged (earlier groups are
    // readable), as the CUDA documentation specifies.
    return emu::exchange(v, src / width <= lane / width ? src : -1);
}
template <typename T>
inline T __shfl_down_sync(unsigned int, T v, unsigned int delta, int width = warpSize) {
    const int lane = static_cast<int>(emu::ctx.lane);
    const int in_seg = lane % width + static_cast<int>(delta);
    return emu::exchange(v, in_seg < width ? lane + static_cast<int>(delta) : -1);
}
template <typename T>
inline T __shfl_up_sync(unsigned int, T v, unsigned int delta, int width = warpSize) {
    const int lane = static_cast<int>(emu::ctx.lane);
    return emu::exchange(v, lane % width >= static_cast<int>(delta) ? lane - static_cast<int>(delta) : -1);
}

// Atomics return the old value, like the device's.
template <typename T>
inline T emu_atomic_add(T* addr, T v) {
    return std::atomic_ref<T>(*addr).fetch_add(v, std::memory_order_relaxed);
}
inline float atomicAdd(float* a, float v) { return emu_atomic_add(a, v); }
inline double atomicAdd(double* a, double v) { return emu_atomic_add(a, v); }
inline int atomicAdd(int* a, int v) { return emu_atomic_add(a, v); }
inline unsigned int atomicAdd(unsigned int* a, unsigned int v) { return emu_atomic_add(a, v); }
inline unsigned long long atomicAdd(unsigned long long* a, unsigned long long v) { return emu_atomic_add(a, v); }
inline int atomicSub(int* a, int v) { return std::atomic_ref<int>(*a).fetch_sub(v, std::memory_order_relaxed); }
inline unsigned int atomicSub(unsigned int* a, unsigned int v) {
    return std::atomic_ref<unsigned int>(*a).fetch_sub(v, std::memory_order_relaxed);
}

template <typename T>
inline T emu_atomic_max(T* addr, T v) {
    std::atomic_ref<T> r(*addr);
    T old = r.load(std::memory_order_relaxed);
    while (old < v && !r.compare_exchange_weak(old, v, std::memory_order_relaxed)) {
    }
    return old;
}
template <typename T>
inline T emu_atomic_min(T* addr, T v) {
    std::atomic_ref<T> r(*addr);
    T old = r.load(std::memory_order_relaxed);
    while (v < old && !r.compare_exchange_weak(old, v, std::memory_order_relaxed)) {
    }
    return old;
}
inline int atomicMax(int* a, int v) { return emu_atomic_max(a, v); }
inline unsigned int atomicMax(unsigned int* a, unsigned int v) { return emu_atomic_max(a, v); }
inline int atomicMin(int* a, int v) { return emu_atomic_min(a, v); }
inline unsigned int atomicMin(unsigned int* a, unsigned int v) { return emu_atomic_min(a, v); }

template <typename T>
inline T emu_atomic_cas(T* addr, T compare, T val) {
    std::atomic_ref<T> r(*addr);
    r.compare_exchange_strong(compare, val, std::memory_order_relaxed);
    return compare;  // the old value, whether or not the swap happened
}
inline int atomicCAS(int* a, int c, int v) { return emu_atomic_cas(a, c, v); }
inline unsigned int atomicCAS(unsigned int* a, unsigned int c, unsigned int v) { return emu_atomic_cas(a, c, v); }
inline unsigned long long atomicCAS(unsigned long long* a, unsigned long long c, unsigned long long v) {
    return emu_atomic_cas(a, c, v);
}
inline int atomicExch(int* a, int v) { return std::atomic_ref<int>(*a).exchange(v, std::memory_order_relaxed); }
inline unsigned int atomicExch(unsigned int* a, unsigned int v) {
    return std::atomic_ref<unsigned int>(*a).exchange(v, std::memory_order_relaxed);
}
inline float atomicExch(float* a, float v) { return std::atomic_ref<float>(*a).exchange(v, std::memory_order_relaxed); }

// Bit casts and math. The fast intrinsics map to the accurate host functions.
inline unsigned int __float_as_uint(float f) { return std::bit_cast<unsigned int>(f); }
inline float __uint_as_float(unsigned int u) { return std::bit_cast<float>(u); }
inline int __float_as_int(float f) { return std::bit_cast<int>(f); }
inline float __int_as_float(int i) { return std::bit_cast<float>(i); }
inline long long __double_as_longlong(double d) { return std::bit_cast<long long>(d); }
inline double __longlong_as_double(long long i) { return std::bit_cast<double>(i); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __log2f(float x) { return std::log2(x); }
inline float __powf(float x, float y) { return std::pow(x, y); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __tanhf(float x) { return std::tanh(x); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float exp2f(float x) { return std::exp2(x); }
// expf, logf, fmaxf, fminf, fabsf, sqrtf, tanhf, fmaf, ... come from <math.h>.
template <typename T>
inline T __ldg(const T* p) {
    return *p;
}

// CUDA's device-side min/max overloads.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned int min(unsigned int a, unsigned int b) { return a < b ? a : b; }
inline unsigned int max(unsigned int a, unsigned int b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }

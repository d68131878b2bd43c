// Host-only emulation of the CUDA subset the kernels under kernels/ use, so the exact .cu
// sources compile with a host C++20 compiler (g++/clang++) and run on the CPU in CI.
//
// build.rs includes this header, then one kernels/*.cu file, in a generated host .cpp, and
// adds one `extern "C" int emu_<kernel>(...)` entry point per `extern "C" __global__` kernel;
// src/backend/emu/ calls those with the same `void**` argument array cuLaunchKernel takes.
//
// Execution model
// - A launch runs its blocks one after another, in x-fastest order (x, then y, then z).
// - A block's CUDA threads are cooperative fibers (user-space contexts, each with its own
//   stack) run one at a time on the launching OS thread; no OS thread is created. A fiber runs
//   until it waits at a barrier (`__syncthreads()`, a shuffle, `__syncwarp()`) or returns from
//   the kernel; then the next ready fiber runs. Fibers start in linear thread order (x
//   fastest) and the ones a completed barrier releases go on in linear order too, so every run
//   of a launch interleaves its threads the same way: deterministic, one thread at a time.
//   `gepa_emu_set_reverse_order(1)` reverses both orders (the parity tests run both).
// - `threadIdx`, `blockIdx`, `blockDim`, `gridDim` and the per-thread context (`emu::ctx`:
//   block, warp, lane) are plain globals that the scheduler sets before it resumes a fiber;
//   kernel locals (including copies of the indices) live on the fiber's stack. The stacks
//   (kFiberStackBytes each, above a guard page) are mapped on first need, up to 1024, and
//   reused by every later block and launch.
// - `__syncthreads()` is a block-wide barrier: it completes when every fiber that has not
//   exited waits at it. A thread that returns from the kernel drops out of it (as exited
//   threads do on the device), so an early `return` before a later `__syncthreads()` does not
//   deadlock.
// - Warps are groups of 32 consecutive linear thread ids (x fastest). A warp shuffle writes
//   the caller's value and source lane into the warp's exchange slots and waits at the warp's
//   barrier; when every live lane of the warp is there, each lane is handed the value of the
//   lane it asked for (the poison, all bits set, for a lane that does not exist or has
//   exited): the warp runs in lockstep at every shuffle (every live lane publishes, then each
//   reads). `__syncwarp()` waits at the same barrier.
// - A barrier that can never complete (some threads at `__syncthreads()` while a warp-mate
//   waits at a shuffle, or the other way round) leaves no fiber ready while some have not
//   exited: launch() stops and returns kDivergentBarrier instead of hanging. The stuck
//   fibers are abandoned (their stacks are reused; kernels hold no resources to release).
// - `__shared__` is `static`: one instance per (translation unit, function), shared by all the
//   block's threads, reused by every block (blocks never run at the same time). Dynamic shared
//   memory (DYNAMIC_SHARED in common.cuh) is a per-launch host buffer, filled with 0xFF bytes
//   (a NaN for f32) before every block, so reads of never-written dynamic shared memory show up.
// - Launches are serialised process-wide by one mutex (static shared memory, the index globals
//   and the fiber pool are global state; cargo runs tests on several threads).
// - Atomics are std::atomic_ref operations. Within a launch only one fiber runs at a time, so
//   plain operations would do; atomic_ref keeps them honest should that ever change.
// - Kernel parameters are copied out of the `void**` array once, at launch, as on the device;
//   every fiber gets its own copy on its stack.
//
// What it does NOT model (a kernel passing here can still be wrong or slow on a GPU):
// - timing, occupancy, register pressure, memory coalescing, caches, shared-memory bank
//   conflicts: it proves logic and indexing, not speed;
// - concurrency between blocks: blocks run sequentially, so inter-block races (e.g. a block
//   reading another block's output without atomics or a grid sync) are invisible; atomics are
//   only tested for accumulation, never under contention (no two threads run at once);
// - warp divergence semantics: the `mask` argument of the *_sync intrinsics is ignored; every
//   live lane of a warp must reach the same shuffle (independent thread scheduling, partial
//   masks, `__syncwarp` with subsets are not modelled); reading a lane that does not exist
//   (partial last warp) or has exited gives a poison value (all bits set), not an error;
//   divergent barriers are reported (kDivergentBarrier) only when they leave the block with
//   no thread able to go on;
// - data races inside a block: threads run one at a time, each until its next barrier, in a
//   fixed order, so accesses between two barriers never overlap and every run behaves alike.
//   A missing barrier shows only when that order exposes it: a thread reading a value that a
//   later thread (in linear order) should have written first sees the stale value (caught);
//   one that an earlier thread wrote is already there (missed in linear order, caught in the
//   reversed order, which is why the parity tests run both);
// - a kernel's stack use beyond kFiberStackBytes (64 KiB per thread) faults on the guard page
//   (the device's per-thread stack limit is different);
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

// Which context switch the fibers use (see "fiber contexts" below): the hand-written x86-64
// one, or POSIX ucontext elsewhere, under AddressSanitizer, or when GEPA_EMU_UCONTEXT is defined.
#if !defined(GEPA_EMU_UCONTEXT)
#if !defined(__x86_64__) || !defined(__ELF__) || defined(__SANITIZE_ADDRESS__)
#define GEPA_EMU_UCONTEXT 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GEPA_EMU_UCONTEXT 1
#endif
#endif
#endif

#include <sys/mman.h>
#include <unistd.h>
#ifdef GEPA_EMU_UCONTEXT
#include <ucontext.h>
#endif

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <math.h>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
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

// Plain globals, not thread_local: every CUDA thread of a launch runs as a fiber on the
// launching OS thread, under the launch mutex, and the scheduler sets them before it resumes a
// fiber (blockIdx, blockDim, gridDim once per block, threadIdx at every switch).
inline uint3 threadIdx{0, 0, 0};
inline uint3 blockIdx{0, 0, 0};
inline dim3 blockDim{};
inline dim3 gridDim{};
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
// Every thread of a block that has not exited waits at a barrier that can never complete:
// some at `__syncthreads()` while a warp-mate waits at a shuffle/`__syncwarp` (or the other way
// round). On the device that is undefined behaviour (typically a hang); here the launch stops
// and reports it. Blocks after the stuck one do not run.
constexpr int kDivergentBarrier = 6;

// Usable bytes of each fiber's stack (a guard page below it is extra). The kernels' frames are
// small: the largest local arrays are a few floats (attention.cu's acc[ATT_MAX_PER_LANE]) and
// the deepest chain is kernel -> device helpers -> host libm; the deepest stack any kernel used
// in the emulator, GPT-2 and trainer tests was 632 bytes (-O2, measured by scanning the stacks
// for written bytes). 64 KiB is about 100x that: room for unoptimised or sanitizer builds
// (larger frames) and for future kernels with bigger local arrays, while a runaway one hits
// the guard page. Only touched pages become resident (a page or two per fiber), so the pool
// costs at most 1024 * 68 KiB of address space, not memory.
constexpr std::size_t kFiberStackBytes = 64 * 1024;

// ---- fiber contexts ------------------------------------------------------------------------
// A context is what a suspended fiber (or the launching code, while fibers run) needs to be
// resumed. On x86-64 ELF targets it is just a stack pointer, switched by the 21 instructions
// below: glibc's swapcontext also saves and restores the signal mask with a system call on
// every switch, which is the very kernel-side cost the fibers are meant to remove (a
// 1024-thread block crosses a barrier with 1024 switches). Elsewhere, or when
// GEPA_EMU_UCONTEXT is defined, or under AddressSanitizer (which understands swapcontext but
// not a hand-made stack switch), POSIX ucontext is used: portable and equally correct.
#ifndef GEPA_EMU_UCONTEXT
// gepa_emu_switch(save, load): pushes the callee-saved registers (the System V ABI's rbx, rbp,
// r12-r15) and the MXCSR / x87 control words (rounding modes are callee-saved too), stores
// the stack pointer in *save, loads `load` as the stack pointer and pops the same layout from
// it. Everything else is caller-saved, so the compiler has already spilled it around the call.
// Each generated .cpp includes this header, so the symbol is weak (one copy survives linking)
// and hidden (it does not leave the library).
asm(R"(
    .pushsection .text
    .p2align 4
    .weak gepa_emu_switch
    .hidden gepa_emu_switch
    .type gepa_emu_switch, @function
gepa_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size gepa_emu_switch, .-gepa_emu_switch
    .popsection
)");
extern "C" void gepa_emu_switch(void** save, void* load);

struct Context {
    void* sp = nullptr;
};
inline void switch_context(Context& from, Context& to) { gepa_emu_switch(&from.sp, to.sp); }
#else
struct Context {
    ucontext_t uc;
};
inline void switch_context(Context& from, Context& to) {
    if (swapcontext(&from.uc, &to.uc) != 0) std::abort();  // cannot fail with a valid context
}
#endif

// A fiber stack: kFiberStackBytes usable, above one PROT_NONE guard page, so that running off
// the end faults at once instead of overwriting the neighbouring fiber's stack.
struct Stack {
    unsigned char* base = nullptr;  // start of the mapping (the guard page)
    std::size_t guard = 0;
    unsigned char* top() const { return base + guard + kFiberStackBytes; }
};

inline Stack map_stack() {
    const long page = sysconf(_SC_PAGESIZE);
    const std::size_t guard = page > 0 ? static_cast<std::size_t>(page) : 4096;
    void* p = mmap(nullptr, guard + kFiberStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    if (mprotect(p, guard, PROT_NONE) != 0) {
        munmap(p, guard + kFiberStackBytes);
        throw std::bad_alloc();
    }
    return Stack{static_cast<unsigned char*>(p), guard};
}

// ---- per-block state -------------------------------------------------------------------------
enum class FiberState : unsigned char { Runnable, AtSyncthreads, AtWarpBarrier, Exited };

// One CUDA thread: its context, stack, indices and where it waits.
struct Fiber {
    Context context;
    Stack stack;
    uint3 tid{0, 0, 0};
    unsigned int linear = 0;
    FiberState state = FiberState::Exited;
#ifdef GEPA_EMU_UCONTEXT
    bool have_ucontext = false;  // getcontext() done once per fiber (it is a system call)
#endif
};

// One warp: an exchange slot per lane, the source lane each waiting lane asked for, the values
// handed out when the warp barrier completes, and which lanes have exited.
struct Warp {
    std::uint64_t slot[kWarpSize];
    std::uint64_t result[kWarpSize];
    int src[kWarpSize];
    bool exited[kWarpSize];
    bool waiting[kWarpSize];
    unsigned int lanes = 0;    // lanes that exist (the last warp may be partial)
    unsigned int live = 0;     // lanes that have not exited
    unsigned int arrived = 0;  // live lanes waiting at the warp barrier
    unsigned int first = 0;    // linear id of lane 0
};

// The block being run and the queue of fibers ready to run. Every fiber is in the queue at
// most once (it is queued only when it starts or when its barrier completes), so a ring of n
// entries is enough.
struct Block {
    std::vector<Warp> warps;
    unsigned char* dynamic_shared = nullptr;
    unsigned int threads = 0;
    unsigned int live = 0;     // fibers that have not exited
    unsigned int at_sync = 0;  // live fibers waiting at __syncthreads()
    bool failed = false;       // a fiber threw (cannot happen in kernel code; reported, not lost)
    std::vector<unsigned int> ready;
    std::size_t head = 0, count = 0;

    void push(unsigned int f) {
        ready[(head + count) % threads] = f;
        ++count;
    }
    bool pop(unsigned int& f) {
        if (count == 0) return false;
        f = ready[head];
        head = (head + 1) % threads;
        --count;
        return true;
    }
};

// What the running fiber sees; the scheduler sets it (and threadIdx) before resuming a fiber.
struct ThreadCtx {
    Block* block = nullptr;
    Warp* warp = nullptr;
    unsigned int lane = 0;
    Fiber* fiber = nullptr;
};
inline ThreadCtx ctx;

// Process-wide scheduler state, used under launch_mutex() only. Fibers and their stacks are
// created on first need and kept for later launches (at most kMaxThreadsPerBlock of each).
struct Scheduler {
    std::vector<std::unique_ptr<Fiber>> fibers;  // unique_ptr: a ucontext must not move
    Context main;                                // the launching code, while a block runs
    Block* block = nullptr;
    void (*run)(void*) = nullptr;                // runs the kernel with the launch's arguments
    void* run_arg = nullptr;
};
// The order in which a block's fibers start, and resume after a completed barrier: linear
// thread order (x fastest), or its reverse. Both are valid executions; a missing barrier shows
// in only one of them (a thread reading what a *later* thread should have written first sees
// the stale value), so the parity tests run every kernel in both. Changed only between
// launches (under launch_mutex()), through gepa_emu_set_reverse_order.
inline std::atomic<bool> reverse_order{false};

// The i-th fiber of n to queue, in the current order.
inline unsigned int nth_in_order(unsigned int i, unsigned int n) {
    return reverse_order.load(std::memory_order_relaxed) ? n - 1 - i : i;
}

inline Scheduler& scheduler() {
    // Never destroyed: a test thread may still be launching while the process exits.
    static Scheduler* s = new Scheduler;
    return *s;
}

inline std::mutex& launch_mutex() {
    static std::mutex m;
    return m;
}

inline unsigned char* dynamic_shared() { return ctx.block->dynamic_shared; }

// Makes fiber f the running one, as seen by the kernel code.
inline void set_current(Scheduler& s, Fiber* f) {
    ctx.block = s.block;
    ctx.fiber = f;
    ctx.warp = &s.block->warps[f->linear / kWarpSize];
    ctx.lane = f->linear % kWarpSize;
    threadIdx = f->tid;
}

// The running fiber has blocked or exited: switches straight to the next ready fiber (or keeps
// running, when that is the caller itself), or back to launch() when none is ready: then the
// block is either finished or stuck.
inline void run_next() {
    Scheduler& s = scheduler();
    Fiber* self = ctx.fiber;
    unsigned int next;
    if (!s.block->pop(next)) {
        switch_context(self->context, s.main);
        return;
    }
    Fiber* f = s.fibers[next].get();
    if (f == self) return;
    set_current(s, f);
    switch_context(self->context, f->context);
}

// Every live fiber is at __syncthreads(): all of them may go on, in the current order.
inline void release_block(Block& b) {
    Scheduler& s = scheduler();
    for (unsigned int k = 0; k < b.threads; ++k) {
        const unsigned int i = nth_in_order(k, b.threads);
        Fiber& f = *s.fibers[i];
        if (f.state == FiberState::AtSyncthreads) {
            f.state = FiberState::Runnable;
            b.push(i);
        }
    }
    b.at_sync = 0;
}

// Every live lane of the warp is at the warp barrier: hands each lane the value of the lane it
// asked for (its own when src < 0, the poison for a lane that does not exist or has exited),
// then lets them go on in lane order (or its reverse). Computing the results here, while every lane's slot is
// still in place, is what makes one barrier per shuffle enough.
inline void release_warp(Block& b, Warp& w) {
    Scheduler& s = scheduler();
    for (unsigned int k = 0; k < w.lanes; ++k) {
        const unsigned int l = nth_in_order(k, w.lanes);
        if (!w.waiting[l]) continue;
        const int src = w.src[l];
        if (src < 0) {
            w.result[l] = w.slot[l];
        } else if (static_cast<unsigned int>(src) >= w.lanes || w.exited[src]) {
            w.result[l] = ~std::uint64_t{0};
        } else {
            w.result[l] = w.slot[src];
        }
        w.waiting[l] = false;
        s.fibers[w.first + l]->state = FiberState::Runnable;
        b.push(w.first + l);
    }
    w.arrived = 0;
}

inline void syncthreads() {
    Block& b = *ctx.block;
    ctx.fiber->state = FiberState::AtSyncthreads;
    if (++b.at_sync == b.live) release_block(b);
    run_next();
}

// The calling lane publishes `bits` and waits until every live lane of its warp has arrived;
// returns the bits of lane `src` (src < 0: its own).
inline std::uint64_t warp_barrier(std::uint64_t bits, int src) {
    Block& b = *ctx.block;
    Warp& w = *ctx.warp;
    const unsigned int lane = ctx.lane;
    w.slot[lane] = bits;
    w.src[lane] = src;
    w.waiting[lane] = true;
    ctx.fiber->state = FiberState::AtWarpBarrier;
    if (++w.arrived == w.live) release_warp(b, w);
    run_next();
    return w.result[lane];
}

inline void syncwarp() { (void)warp_barrier(~std::uint64_t{0}, -1); }

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
    return from_bits<T>(warp_barrier(to_bits(v), src));
}

// The kernel returned: the fiber drops out of its warp's and its block's barriers (which may
// complete them), then hands over for good.
inline void thread_exit() {
    Block& b = *ctx.block;
    Warp& w = *ctx.warp;
    ctx.fiber->state = FiberState::Exited;
    w.exited[ctx.lane] = true;
    --w.live;
    --b.live;
    if (w.arrived != 0 && w.arrived == w.live) release_warp(b, w);
    if (b.at_sync != 0 && b.at_sync == b.live) release_block(b);
    run_next();
    std::abort();  // an exited fiber is never resumed
}

// Where every fiber starts: runs the kernel, then exits.
inline void fiber_main() {
    Scheduler& s = scheduler();
    try {
        s.run(s.run_arg);
    } catch (...) {
        s.block->failed = true;
    }
    thread_exit();
}

// Prepares fiber f to start at fiber_main() on its stack.
inline void start_context(Fiber& f) {
#ifndef GEPA_EMU_UCONTEXT
    // The stack as gepa_emu_switch leaves it, read from low to high addresses: the control
    // words, six callee-saved registers (zero), the return address (fiber_main), and a null
    // return address for fiber_main itself, which never returns. After the final `ret` the
    // stack pointer is 8 mod 16, as at any function entry.
    std::uint32_t mxcsr;
    std::uint16_t fpcw;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fpcw));
    auto* sp = reinterpret_cast<std::uint64_t*>(f.stack.top());
    *--sp = 0;
    *--sp = reinterpret_cast<std::uint64_t>(&fiber_main);
    for (int r = 0; r < 6; ++r) *--sp = 0;
    *--sp = std::uint64_t{mxcsr} | std::uint64_t{fpcw} << 32;
    f.context.sp = sp;
#else
    if (!f.have_ucontext) {
        if (getcontext(&f.context.uc) != 0) throw std::bad_alloc();
        f.have_ucontext = true;
    }
    f.context.uc.uc_stack.ss_sp = f.stack.base + f.stack.guard;
    f.context.uc.uc_stack.ss_size = kFiberStackBytes;
    f.context.uc.uc_link = nullptr;
    makecontext(&f.context.uc, &fiber_main, 0);
#endif
}

// ---- launch ----------------------------------------------------------------------------------
template <typename... Ps, std::size_t... I>
inline std::tuple<std::decay_t<Ps>...> read_args(void** args, std::index_sequence<I...>) {
    return std::tuple<std::decay_t<Ps>...>{*static_cast<std::decay_t<Ps>*>(args[I])...};
}

template <typename... Ps>
struct Bound {
    void (*kernel)(Ps...);
    std::tuple<std::decay_t<Ps>...> params;
    static void run(void* self) {
        auto* b = static_cast<Bound*>(self);
        std::apply(b->kernel, b->params);  // each fiber gets its own copy of the parameters
    }
};

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

        Bound<Ps...> bound{kernel, read_args<Ps...>(args, std::index_sequence_for<Ps...>{})};
        const unsigned int n = static_cast<unsigned int>(threads);
        std::lock_guard<std::mutex> lock(launch_mutex());

        Scheduler& s = scheduler();
        while (s.fibers.size() < n) {
            auto f = std::make_unique<Fiber>();
            f->stack = map_stack();
            s.fibers.push_back(std::move(f));
        }
        for (unsigned int t = 0; t < n; ++t) {
            Fiber& f = *s.fibers[t];
            f.linear = t;
            f.tid = uint3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
        }

        // 16-byte aligned dynamic shared memory (at least one line so the pointer is valid).
        std::vector<std::uint64_t> dyn((shared_bytes + 15) / 16 * 2 + 2);
        unsigned char* dyn_ptr = reinterpret_cast<unsigned char*>(dyn.data());

        const unsigned int nwarps = (n + kWarpSize - 1) / kWarpSize;
        Block state;
        state.threads = n;
        state.warps.resize(nwarps);
        state.ready.resize(n);
        state.dynamic_shared = dyn_ptr;
        s.block = &state;
        s.run = &Bound<Ps...>::run;
        s.run_arg = &bound;
        blockDim = block;
        gridDim = grid;

        for (unsigned int z = 0; z < grid.z; ++z) {
            for (unsigned int y = 0; y < grid.y; ++y) {
                for (unsigned int x = 0; x < grid.x; ++x) {
                    blockIdx = uint3{x, y, z};
                    state.live = n;
                    state.at_sync = 0;
                    state.head = state.count = 0;
                    for (unsigned int w = 0; w < nwarps; ++w) {
                        Warp& warp = state.warps[w];
                        warp.first = w * kWarpSize;
                        warp.lanes = std::min(kWarpSize, n - w * kWarpSize);
                        warp.live = warp.lanes;
                        warp.arrived = 0;
                        for (unsigned int l = 0; l < kWarpSize; ++l) {
                            warp.slot[l] = kPoison;
                            warp.result[l] = kPoison;
                            warp.src[l] = -1;
                            warp.exited[l] = false;
                            warp.waiting[l] = false;
                        }
                    }
                    std::memset(dyn_ptr, 0xFF, dyn.size() * sizeof(std::uint64_t));
                    for (unsigned int t = 0; t < n; ++t) {
                        Fiber& f = *s.fibers[t];
                        start_context(f);
                        f.state = FiberState::Runnable;
                    }
                    for (unsigned int k = 0; k < n; ++k) state.push(nth_in_order(k, n));
                    unsigned int first = 0;
                    (void)state.pop(first);
                    set_current(s, s.fibers[first].get());
                    // Returns once no fiber is ready: all exited, or the rest wait forever.
                    switch_context(s.main, s.fibers[first]->context);
                    ctx = ThreadCtx{};
                    if (state.failed) return kHostFailure;
                    if (state.live != 0) return kDivergentBarrier;
                }
            }
        }
        return kOk;
    } catch (...) {
        return kHostFailure;
    }
}

}  // namespace emu

// Sets the emulator's thread order (non-zero: reversed) for the launches that follow; waits for
// a running launch to finish. Every generated .cpp includes this header, so the symbol is weak
// (one copy survives linking).
extern "C" __attribute__((weak)) void gepa_emu_set_reverse_order(int on) {
    std::lock_guard<std::mutex> lock(emu::launch_mutex());
    emu::reverse_order.store(on != 0, std::memory_order_relaxed);
}

// ---- intrinsics ------------------------------------------------------------------------------
inline void __syncthreads() { emu::syncthreads(); }
inline void __syncwarp(unsigned int = 0xffffffffu) { emu::syncwarp(); }
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

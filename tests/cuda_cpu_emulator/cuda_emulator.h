// A CPU emulation of the bits of the CUDA execution model pha's kernels use, so that their
// .cu sources (launches rewritten by tests/cuda_cpu_build.py) compile with g++ and run here
// without a GPU, on CPU pointers. Each CUDA thread of a block is a fiber (ucontext) run by
// one OS thread: a thread runs until it waits at __syncthreads or a warp shuffle, then the
// next one runs, so the barriers have CUDA's semantics at a fraction of the cost of OS
// threads. __shared__ variables are function statics (the blocks of a launch run one after
// another). For tests only: it checks indexing, masking and synchronisation, not speed.
#pragma once

#include <setjmp.h>
#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

// Set by the scheduler before it resumes a thread (one OS thread runs every fiber).
inline dim3 threadIdx, blockIdx, blockDim, gridDim;

typedef struct CUstream_st* cudaStream_t;
typedef enum cudaError {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorLaunchFailure = 719,
} cudaError_t;

namespace emu {
constexpr unsigned kWarpSize = 32, kMaxThreads = 1024;
constexpr size_t kStackBytes = 64 * 1024;

// Started once with makecontext/setcontext, then switched with _setjmp/_longjmp, which
// (unlike swapcontext) do not save and restore the signal mask: no system call per switch.
struct Fiber {
  ucontext_t start;
  jmp_buf resume;
  std::vector<char> stack = std::vector<char>(kStackBytes);
  dim3 thread;
  bool started = false, done = false;
};

struct Barrier {  // arrive, then yield to the other threads until all have arrived
  unsigned expected = 0, arrived = 0, generation = 0;
};

inline jmp_buf scheduler;
inline std::vector<Fiber>* fibers = nullptr;
inline unsigned current = 0;
inline const std::function<void()>* body = nullptr;
inline Barrier block_barrier;
inline std::vector<Barrier> warp_barriers;
inline float shuffle_slots[kMaxThreads];
inline cudaError_t last_error = cudaSuccess;
inline uint64_t progress = 0;  // barrier arrivals and finished threads

inline void yield() {
  if (!_setjmp((*fibers)[current].resume)) _longjmp(scheduler, 1);
}

inline void wait(Barrier& b) {
  const unsigned generation = b.generation;
  ++progress;
  if (++b.arrived == b.expected) {
    b.arrived = 0;
    ++b.generation;
    return;
  }
  while (b.generation == generation) yield();
}

inline unsigned linear_thread() {
  return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
}

[[noreturn]] inline void fiber_entry() {
  (*body)();
  (*fibers)[current].done = true;
  ++progress;
  _longjmp(scheduler, 1);
}

// Runs every thread of one block to completion, switching at barriers. Returns false on a
// deadlock (a barrier some threads never reach, e.g. after others returned).
inline bool run_block(std::vector<Fiber>& pool) {
  for (auto& f : pool) {
    getcontext(&f.start);
    f.start.uc_stack.ss_sp = f.stack.data();
    f.start.uc_stack.ss_size = f.stack.size();
    f.start.uc_link = nullptr;
    f.started = f.done = false;
    makecontext(&f.start, fiber_entry, 0);
  }
  for (unsigned running = pool.size(); running > 0;) {
    const uint64_t before = progress;
    running = 0;
    for (unsigned t = 0; t < pool.size(); ++t) {
      if (pool[t].done) continue;
      current = t;
      threadIdx = pool[t].thread;
      if (!_setjmp(scheduler)) {
        if (pool[t].started) _longjmp(pool[t].resume, 1);
        pool[t].started = true;
        setcontext(&pool[t].start);
      }
      running += !pool[t].done;
    }
    if (running > 0 && progress == before) return false;
  }
  return true;
}

struct Config {
  dim3 grid, block;
  Config(dim3 g, dim3 b, size_t = 0, cudaStream_t = nullptr) : grid(g), block(b) {}
};

// kernel<<<grid, block, smem, stream>>>(args...), with CUDA's launch-configuration checks.
template <typename Kernel, typename... Args>
void launch(Kernel kernel, Config cfg, Args... args) {
  const dim3 g = cfg.grid, b = cfg.block;
  const unsigned threads = b.x * b.y * b.z;
  if (!g.x || !g.y || !g.z || !threads || threads > kMaxThreads || g.y > 65535 || g.z > 65535) {
    last_error = cudaErrorInvalidConfiguration;
    return;
  }
  std::vector<Fiber> pool(threads);
  for (unsigned t = 0; t < threads; ++t)
    pool[t].thread = dim3(t % b.x, t / b.x % b.y, t / (b.x * b.y));
  const std::function<void()> run = [&] { kernel(args...); };
  body = &run;
  fibers = &pool;
  blockDim = b;
  gridDim = g;
  block_barrier = Barrier{threads};
  warp_barriers.assign((threads + kWarpSize - 1) / kWarpSize, Barrier{kWarpSize});
  if (threads % kWarpSize) warp_barriers.back().expected = threads % kWarpSize;
  for (unsigned bz = 0; bz < g.z; ++bz)
    for (unsigned by = 0; by < g.y; ++by)
      for (unsigned bx = 0; bx < g.x; ++bx) {
        blockIdx = dim3(bx, by, bz);
        if (!run_block(pool)) {  // a hang on a GPU: report it instead
          last_error = cudaErrorLaunchFailure;
          fibers = nullptr;
          return;
        }
      }
  fibers = nullptr;
}
}  // namespace emu

inline void __syncthreads() { emu::wait(emu::block_barrier); }

inline float __shfl_xor_sync(unsigned, float v, int offset) {
  const unsigned t = emu::linear_thread(), lane = t % emu::kWarpSize;
  emu::Barrier& warp = emu::warp_barriers[t / emu::kWarpSize];
  emu::shuffle_slots[t] = v;
  emu::wait(warp);
  const float other = emu::shuffle_slots[t - lane + (lane ^ offset)];
  emu::wait(warp);
  return other;
}

inline cudaError_t cudaGetLastError() {
  const cudaError_t err = emu::last_error;
  emu::last_error = cudaSuccess;
  return err;
}
inline cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t) {
  std::memset(p, value, bytes);
  return cudaSuccess;
}
inline const char* cudaGetErrorString(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidConfiguration: return "invalid configuration";
    case cudaErrorLaunchFailure: return "deadlock at a barrier (emulated launch failure)";
    default: return "invalid value";
  }
}

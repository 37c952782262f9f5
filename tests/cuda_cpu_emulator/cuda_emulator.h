// A CPU emulation of the bits of the CUDA execution model the pha kernels use, so that
// their .cu sources (launches rewritten by tests/cuda_cpu_build.py) run here without a
// GPU: each block's threads are OS threads, __syncthreads and warp shuffles are barriers,
// and __shared__ variables are function statics (the blocks of a launch run one after
// another). For tests only: it checks indexing, masking and synchronisation, not speed,
// and only what these kernels use (1-D blocks of whole warps, float shuffles).
#pragma once

#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <thread>
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

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

typedef void* cudaStream_t;
typedef enum { cudaSuccess = 0, cudaErrorInvalidConfiguration = 9 } cudaError_t;

namespace emu {
constexpr int kMaxWarps = 32;
inline std::barrier<>* block_barrier = nullptr;
inline std::vector<std::barrier<>*> warp_barriers;
inline float shuffle_slots[kMaxWarps][32];
inline cudaError_t last_error = cudaSuccess;

struct Config {
  dim3 grid, block;
  Config(dim3 g, dim3 b, size_t = 0, cudaStream_t = nullptr) : grid(g), block(b) {}
};

template <typename Kernel, typename... Args>
void launch(Kernel kernel, Config cfg, Args... args) {
  const unsigned threads = cfg.block.x;
  if (cfg.block.y != 1 || cfg.block.z != 1 || threads % 32 || threads > 32 * kMaxWarps ||
      cfg.grid.z != 1) {
    last_error = cudaErrorInvalidConfiguration;
    return;
  }
  std::barrier<> block(threads);
  std::vector<std::barrier<>*> warps;
  for (unsigned w = 0; w < threads / 32; ++w) warps.push_back(new std::barrier<>(32));
  block_barrier = &block;
  warp_barriers = warps;
  for (unsigned by = 0; by < cfg.grid.y; ++by) {
    for (unsigned bx = 0; bx < cfg.grid.x; ++bx) {
      std::vector<std::thread> pool;
      for (unsigned t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
          threadIdx = dim3(t);
          blockIdx = dim3(bx, by);
          blockDim = cfg.block;
          gridDim = cfg.grid;
          kernel(args...);
        });
      }
      for (auto& th : pool) th.join();
    }
  }
  for (auto* w : warps) delete w;
}
}  // namespace emu

inline void __syncthreads() { emu::block_barrier->arrive_and_wait(); }

inline float __shfl_xor_sync(unsigned, float v, int offset) {
  const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  emu::shuffle_slots[warp][lane] = v;
  emu::warp_barriers[warp]->arrive_and_wait();
  const float other = emu::shuffle_slots[warp][lane ^ offset];
  emu::warp_barriers[warp]->arrive_and_wait();
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
  return err == cudaSuccess ? "no error" : "invalid configuration";
}

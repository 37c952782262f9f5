// CPU emulation of the few CUDA runtime pieces pha's .cu files use, so that their kernels
// can be compiled by g++ and checked against the reference on a machine without a GPU
// (tests/test_hyper_adapter_gpu.py). Each thread block runs as one std::thread per CUDA
// thread, blocks one after another: __shared__ arrays become function statics and
// __syncthreads() a std::barrier. Launches `k<<<grid, block, smem, stream>>>(args)` are
// rewritten by the test into `pha_emulate_launch(grid, block, smem, stream, k, args)`.
#pragma once

#include <barrier>
#include <cmath>
#include <cstdint>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static

typedef enum cudaError {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
} cudaError_t;
typedef struct CUstream_st* cudaStream_t;

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

inline thread_local dim3 threadIdx, blockIdx;
inline std::barrier<>* pha_block_barrier = nullptr;

inline void __syncthreads() { pha_block_barrier->arrive_and_wait(); }
inline cudaError_t cudaGetLastError() { return cudaSuccess; }

template <typename Kernel, typename... Args>
void pha_emulate_launch(dim3 grid, dim3 block, int, cudaStream_t, Kernel kernel, Args... args) {
  const unsigned threads = block.x * block.y * block.z;
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        std::barrier<> barrier(threads);
        pha_block_barrier = &barrier;
        std::vector<std::thread> pool;
        for (unsigned t = 0; t < threads; ++t)
          pool.emplace_back([=] {
            blockIdx = dim3(bx, by, bz);
            threadIdx = dim3(t % block.x, t / block.x % block.y, t / (block.x * block.y));
            kernel(args...);
          });
        for (auto& th : pool) th.join();
      }
}

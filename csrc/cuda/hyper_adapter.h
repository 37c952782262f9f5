// Torch-free C interface of the CUDA hyper_adapter kernels (hyper_adapter_kernels.cu):
//   out = act(x @ w_down[g] + b_down[g]) @ w_up[g] + b_up[g],  g = index[b] (or b).
// Raw device pointers, contiguous row-major tensors, one stream. The callers (the torch
// binding, or any other host code) validate shapes, dtypes and index ranges first.
#pragma once

#include <cuda_runtime_api.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { PHA_F32 = 0, PHA_BF16 = 1, PHA_F16 = 2 } pha_dtype;

typedef enum {
  PHA_ACT_RELU = 0,
  PHA_ACT_GELU = 1,  // tanh form
  PHA_ACT_SILU = 2,
  PHA_ACT_IDENTITY = 3
} pha_activation;

typedef struct {
  int64_t batch;   // B
  int64_t tokens;  // T
  int64_t dim;     // d
  int64_t rank;    // r
  int64_t sets;    // G
} pha_adapter_shape;

// x [B,T,d], w_down [G,d,r], b_down [G,r], w_up [G,r,d], b_up [G,d] and out [B,T,d] in
// `dtype`; index int64 [B] with values in [0, G), or NULL for G == B (set b for
// instance b). hidden: fp32 [B,T,r], written with the pre-activation x @ w_down + b_down.
cudaError_t pha_hyper_adapter_forward(pha_dtype dtype, pha_activation activation,
                                      pha_adapter_shape shape, const void* x, const void* w_down,
                                      const void* b_down, const void* w_up, const void* b_up,
                                      const int64_t* index, float* hidden, void* out,
                                      cudaStream_t stream);

// Gradients of the forward above. hidden: the fp32 pre-activation it wrote. order: int64
// [B], the instances sorted by set; segments: int64 [G+1], set g owns
// order[segments[g] : segments[g+1]] (each set's gradient sums over those instances in
// this order: deterministic; an unused set gets zeros). grad_hidden: fp32 [B,T,r]
// workspace. Outputs in `dtype`, shaped like x, w_down, b_down, w_up, b_up.
cudaError_t pha_hyper_adapter_backward(pha_dtype dtype, pha_activation activation,
                                       pha_adapter_shape shape, const void* grad_out,
                                       const void* x, const void* w_down, const void* w_up,
                                       const float* hidden, const int64_t* index,
                                       const int64_t* order, const int64_t* segments,
                                       float* grad_hidden, void* grad_x, void* grad_w_down,
                                       void* grad_b_down, void* grad_w_up, void* grad_b_up,
                                       cudaStream_t stream);

#ifdef __cplusplus
}
#endif

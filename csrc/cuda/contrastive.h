// Plain C launchers of the contrastive losses (PHA's L_ins and L_pro) on CUDA: raw device
// pointers + a stream, no torch. contrastive_binding.cpp checks every argument and calls
// them; contrastive_kernels.cu implements them (see its header comment for the scheme).
//
// All pointers are device pointers to contiguous row-major data: z [B, D], prototypes
// [K, D] (dtype `dtype`), labels int64 [B], lse [B] fp32, loss / grad_loss a single fp32.
// `workspace` holds the *_workspace_floats(...) fp32 values; forward and backward do not
// share it (the backward recomputes what it needs). Every launcher returns the first CUDA
// error (cudaSuccess when the kernels were queued).
#pragma once

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { PHA_LOSS_F32 = 0, PHA_LOSS_BF16 = 1, PHA_LOSS_F16 = 2 } pha_loss_dtype;

size_t pha_supcon_workspace_floats(int64_t B, int64_t D);

// loss = mean over rows with a positive of (lse_i - sum_{p in P(i)} s_ip / |P(i)|);
// 0 when no row has a positive (NaN if z holds NaN).
cudaError_t pha_supcon_forward(const void* z, pha_loss_dtype dtype, const int64_t* labels,
                               int64_t B, int64_t D, float temperature, float* workspace,
                               float* lse, float* loss, cudaStream_t stream);

// grad_z (dtype of z) = d loss / d z scaled by *grad_loss.
cudaError_t pha_supcon_backward(const float* grad_loss, const void* z, pha_loss_dtype dtype,
                                const int64_t* labels, const float* lse, int64_t B, int64_t D,
                                float temperature, float* workspace, void* grad_z,
                                cudaStream_t stream);

size_t pha_prototype_workspace_floats(int64_t B, int64_t K, int64_t D);

// loss = mean_i (lse_i - s_{i,y_i}) (0 for B == 0); lse over k != y_i when
// exclude_positive (K == 1 then gives loss 0). A label outside [0, K) makes its row's lse
// (and so the loss) NaN.
cudaError_t pha_prototype_forward(const void* z, const void* prototypes, pha_loss_dtype dtype,
                                  const int64_t* labels, int64_t B, int64_t K, int64_t D,
                                  float temperature, int exclude_positive, float* workspace,
                                  float* lse, float* loss, cudaStream_t stream);

cudaError_t pha_prototype_backward(const float* grad_loss, const void* z, const void* prototypes,
                                   pha_loss_dtype dtype, const int64_t* labels, const float* lse,
                                   int64_t B, int64_t K, int64_t D, float temperature,
                                   int exclude_positive, float* workspace, void* grad_z,
                                   void* grad_prototypes, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

// torch binding of the CUDA contrastive losses: torch.ops.pha_C.{supcon,prototype}_
// {forward,backward} on the launcher contract of pha.ops.contrastive. Every argument is
// checked here before a pointer reaches the C launchers of contrastive.h. The kernels
// never use a label as an address (they only compare labels), so no label value can make
// them read out of bounds; a prototype id outside [0, K) makes the loss NaN.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cmath>
#include <tuple>

#include "contrastive.h"

namespace {

pha_loss_dtype loss_dtype(const at::Tensor& t, const char* name) {
  switch (t.scalar_type()) {
    case at::kFloat: return PHA_LOSS_F32;
    case at::kBFloat16: return PHA_LOSS_BF16;
    case at::kHalf: return PHA_LOSS_F16;
    default:
      TORCH_CHECK_TYPE(false, name, " must be float32, bfloat16 or float16 on CUDA, got ",
                       t.scalar_type());
  }
}

void check_on(const at::Tensor& t, const char* name, const at::Tensor& z) {
  TORCH_CHECK_VALUE(t.is_cuda() && t.device() == z.device(), name, " must be on z's device (",
                    z.device(), "), got ", t.device());
  TORCH_CHECK_VALUE(t.is_contiguous(), name, " must be contiguous");
}

pha_loss_dtype check_z(const at::Tensor& z) {
  TORCH_CHECK_VALUE(z.is_cuda(), "z must be a CUDA tensor, got device ", z.device());
  TORCH_CHECK_VALUE(z.dim() == 2, "z must have shape [B, D], got ", z.sizes());
  TORCH_CHECK_VALUE(z.is_contiguous(), "z must be contiguous");
  return loss_dtype(z, "z");
}

void check_prototypes(const at::Tensor& prototypes, const at::Tensor& z) {
  check_on(prototypes, "prototypes", z);
  TORCH_CHECK_VALUE(prototypes.dim() == 2 && prototypes.size(1) == z.size(1),
                    "prototypes must have shape [K, D=", z.size(1), "], got ", prototypes.sizes());
  TORCH_CHECK_TYPE(prototypes.scalar_type() == z.scalar_type(),
                   "prototypes must have z's dtype (", z.scalar_type(), "), got ",
                   prototypes.scalar_type());
}

void check_labels(const at::Tensor& labels, const at::Tensor& z) {
  TORCH_CHECK_TYPE(labels.scalar_type() == at::kLong, "labels must be int64, got ",
                   labels.scalar_type());
  TORCH_CHECK_VALUE(labels.dim() == 1 && labels.size(0) == z.size(0), "labels must have shape [B=",
                    z.size(0), "], got ", labels.sizes());
  check_on(labels, "labels", z);
}

void check_lse(const at::Tensor& lse, const at::Tensor& z) {
  TORCH_CHECK_TYPE(lse.scalar_type() == at::kFloat, "lse must be float32, got ", lse.scalar_type());
  TORCH_CHECK_VALUE(lse.dim() == 1 && lse.size(0) == z.size(0), "lse must have shape [B=",
                    z.size(0), "], got ", lse.sizes());
  check_on(lse, "lse", z);
}

float check_temperature(double temperature) {
  TORCH_CHECK_VALUE(std::isfinite(temperature) && temperature > 0,
                    "temperature must be a finite number > 0, got ", temperature);
  return static_cast<float>(temperature);
}

// The upstream gradient as one fp32 value on z's device.
at::Tensor check_grad_loss(const at::Tensor& grad_loss, const at::Tensor& z) {
  TORCH_CHECK_VALUE(grad_loss.numel() == 1, "grad_loss must hold one value, got shape ",
                    grad_loss.sizes());
  TORCH_CHECK_VALUE(grad_loss.device() == z.device(), "grad_loss must be on z's device (",
                    z.device(), "), got ", grad_loss.device());
  return grad_loss.to(at::kFloat).contiguous();
}

at::Tensor workspace(size_t floats, const at::Tensor& z) {
  return at::empty({static_cast<int64_t>(floats)}, z.options().dtype(at::kFloat));
}

void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, "pha_cuda::", op, " failed: ", cudaGetErrorString(err));
}

std::tuple<at::Tensor, at::Tensor> supcon_forward(const at::Tensor& z, const at::Tensor& labels,
                                                  double temperature) {
  const pha_loss_dtype dtype = check_z(z);
  check_labels(labels, z);
  const float tau = check_temperature(temperature);
  const c10::cuda::CUDAGuard guard(z.device());
  const int64_t B = z.size(0), D = z.size(1);
  at::Tensor loss = at::empty({}, z.options().dtype(at::kFloat));
  at::Tensor lse = at::empty({B}, z.options().dtype(at::kFloat));
  at::Tensor ws = workspace(pha_supcon_workspace_floats(B, D), z);
  check_launch(pha_supcon_forward(z.data_ptr(), dtype, labels.data_ptr<int64_t>(), B, D, tau,
                                  ws.data_ptr<float>(), lse.data_ptr<float>(),
                                  loss.data_ptr<float>(),
                                  c10::cuda::getCurrentCUDAStream().stream()),
               "supcon_forward");
  return {loss, lse};
}

at::Tensor supcon_backward(const at::Tensor& grad_loss, const at::Tensor& z,
                           const at::Tensor& labels, const at::Tensor& lse, double temperature) {
  const pha_loss_dtype dtype = check_z(z);
  check_labels(labels, z);
  check_lse(lse, z);
  const float tau = check_temperature(temperature);
  const c10::cuda::CUDAGuard guard(z.device());
  const at::Tensor grad = check_grad_loss(grad_loss, z);
  const int64_t B = z.size(0), D = z.size(1);
  at::Tensor grad_z = at::empty_like(z);
  at::Tensor ws = workspace(pha_supcon_workspace_floats(B, D), z);
  check_launch(pha_supcon_backward(grad.data_ptr<float>(), z.data_ptr(), dtype,
                                   labels.data_ptr<int64_t>(), lse.data_ptr<float>(), B, D, tau,
                                   ws.data_ptr<float>(), grad_z.data_ptr(),
                                   c10::cuda::getCurrentCUDAStream().stream()),
               "supcon_backward");
  return grad_z;
}

std::tuple<at::Tensor, at::Tensor> prototype_forward(const at::Tensor& z,
                                                     const at::Tensor& prototypes,
                                                     const at::Tensor& labels, double temperature,
                                                     bool exclude_positive) {
  const pha_loss_dtype dtype = check_z(z);
  check_prototypes(prototypes, z);
  check_labels(labels, z);
  const float tau = check_temperature(temperature);
  const c10::cuda::CUDAGuard guard(z.device());
  const int64_t B = z.size(0), K = prototypes.size(0), D = z.size(1);
  at::Tensor loss = at::empty({}, z.options().dtype(at::kFloat));
  at::Tensor lse = at::empty({B}, z.options().dtype(at::kFloat));
  at::Tensor ws = workspace(pha_prototype_workspace_floats(B, K, D), z);
  check_launch(pha_prototype_forward(z.data_ptr(), prototypes.data_ptr(), dtype,
                                     labels.data_ptr<int64_t>(), B, K, D, tau, exclude_positive,
                                     ws.data_ptr<float>(), lse.data_ptr<float>(),
                                     loss.data_ptr<float>(),
                                     c10::cuda::getCurrentCUDAStream().stream()),
               "prototype_forward");
  return {loss, lse};
}

std::tuple<at::Tensor, at::Tensor> prototype_backward(const at::Tensor& grad_loss,
                                                      const at::Tensor& z,
                                                      const at::Tensor& prototypes,
                                                      const at::Tensor& labels,
                                                      const at::Tensor& lse, double temperature,
                                                      bool exclude_positive) {
  const pha_loss_dtype dtype = check_z(z);
  check_prototypes(prototypes, z);
  check_labels(labels, z);
  check_lse(lse, z);
  const float tau = check_temperature(temperature);
  const c10::cuda::CUDAGuard guard(z.device());
  const at::Tensor grad = check_grad_loss(grad_loss, z);
  const int64_t B = z.size(0), K = prototypes.size(0), D = z.size(1);
  at::Tensor grad_z = at::empty_like(z);
  at::Tensor grad_prototypes = at::empty_like(prototypes);
  at::Tensor ws = workspace(pha_prototype_workspace_floats(B, K, D), z);
  check_launch(pha_prototype_backward(grad.data_ptr<float>(), z.data_ptr(), prototypes.data_ptr(),
                                      dtype, labels.data_ptr<int64_t>(), lse.data_ptr<float>(), B,
                                      K, D, tau, exclude_positive, ws.data_ptr<float>(),
                                      grad_z.data_ptr(), grad_prototypes.data_ptr(),
                                      c10::cuda::getCurrentCUDAStream().stream()),
               "prototype_backward");
  return {grad_z, grad_prototypes};
}

}  // namespace

TORCH_LIBRARY_IMPL(pha_C, CUDA, m) {
  m.impl("supcon_forward", &supcon_forward);
  m.impl("supcon_backward", &supcon_backward);
  m.impl("prototype_forward", &prototype_forward);
  m.impl("prototype_backward", &prototype_backward);
}

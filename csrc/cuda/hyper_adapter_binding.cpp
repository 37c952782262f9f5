// Torch binding of the CUDA hyper_adapter kernels (hyper_adapter_kernels.cu): checks every
// argument, allocates the outputs and launches on the current stream. Registered as
// torch.ops.pha_C.hyper_adapter_forward / hyper_adapter_backward, whose schemas pha._C
// defines (csrc/cpu/module.cpp; the launcher contract of pha/ops/hyper_adapter.py).
// Only ATen, torch/library.h and c10/cuda (not torch/extension.h with pybind, nor
// ATen/cuda/CUDAContext.h, which needs the cuBLAS/cuSPARSE headers): this file then also
// compiles against a CPU torch plus the bare CUDA runtime headers, as a test checks.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <optional>
#include <string_view>
#include <tuple>
#include <vector>

#include "hyper_adapter.h"

namespace {

pha_activation parse_activation(std::string_view name) {
  if (name == "relu") return PHA_ACT_RELU;
  if (name == "gelu") return PHA_ACT_GELU;
  if (name == "silu") return PHA_ACT_SILU;
  if (name == "identity") return PHA_ACT_IDENTITY;
  C10_THROW_ERROR(ValueError, c10::str("activation must be one of relu, gelu, silu, identity, got '",
                                       std::string(name), "'"));
}

pha_dtype dtype_code(const at::Tensor& x) {
  switch (x.scalar_type()) {
    case at::kFloat:
      return PHA_F32;
    case at::kBFloat16:
      return PHA_BF16;
    case at::kHalf:
      return PHA_F16;
    default:
      C10_THROW_ERROR(TypeError,
                      c10::str("x must be float32, bfloat16 or float16 for the CUDA backend, got ",
                               x.scalar_type()));
  }
}

// `t` is a contiguous CUDA tensor of `dtype` on x's device, shaped `shape`.
void check_tensor(const char* name, const at::Tensor& t, const at::Tensor& x,
                  at::ScalarType dtype, std::vector<int64_t> shape) {
  TORCH_CHECK_VALUE(t.is_cuda() && t.device() == x.device(), name, " must be on ", x.device(),
                    ", got ", t.device());
  TORCH_CHECK_TYPE(t.scalar_type() == dtype, name, " must have dtype ", dtype, ", got ",
                   t.scalar_type());
  TORCH_CHECK_VALUE(t.sizes() == at::IntArrayRef(shape), name, " must have shape ",
                    at::IntArrayRef(shape), ", got ", t.sizes());
  TORCH_CHECK_VALUE(t.is_contiguous(), name, " must be contiguous");
}

// The problem sizes, after checking x [B,T,d], w_down [G,d,r] and w_up [G,r,d].
pha_adapter_shape check_shapes(const at::Tensor& x, const at::Tensor& w_down,
                               const at::Tensor& w_up) {
  TORCH_CHECK_VALUE(x.is_cuda(), "x must be a CUDA tensor, got ", x.device());
  TORCH_CHECK_VALUE(x.dim() == 3, "x must have shape [B, T, d], got ", x.sizes());
  TORCH_CHECK_VALUE(w_down.dim() == 3, "w_down must have shape [G, d, r], got ", w_down.sizes());
  const pha_adapter_shape s{x.size(0), x.size(1), x.size(2), w_down.size(2), w_down.size(0)};
  dtype_code(x);  // throws for the dtypes the kernels do not have
  check_tensor("x", x, x, x.scalar_type(), {s.batch, s.tokens, s.dim});
  check_tensor("w_down", w_down, x, x.scalar_type(), {s.sets, s.dim, s.rank});
  check_tensor("w_up", w_up, x, x.scalar_type(), {s.sets, s.rank, s.dim});
  return s;
}

// The int64 index pointer (nullptr without index, where G must equal B), range-checked.
const int64_t* check_index(const std::optional<at::Tensor>& index, const at::Tensor& x,
                           const pha_adapter_shape& s) {
  if (!index.has_value()) {
    TORCH_CHECK_VALUE(s.sets == s.batch, "without index there is one weight set per instance: G=",
                      s.sets, " must equal B=", s.batch);
    return nullptr;
  }
  check_tensor("index", *index, x, at::kLong, {s.batch});
  if (s.batch > 0) {  // the kernels read weights at these offsets: check before launching
    const auto [lo, hi] = at::aminmax(*index);
    const at::Tensor range = at::stack({lo, hi}).cpu();  // one device-to-host copy
    const int64_t lo_v = range[0].item<int64_t>(), hi_v = range[1].item<int64_t>();
    TORCH_CHECK_VALUE(lo_v >= 0 && hi_v < s.sets, "index values must lie in [0, ", s.sets,
                      "), got min ", lo_v, ", max ", hi_v);
  }
  return index->data_ptr<int64_t>();
}

void check_launch(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, what, " failed to launch: ", cudaGetErrorString(err));
}

std::tuple<at::Tensor, at::Tensor> hyper_adapter_forward(
    const at::Tensor& x, const at::Tensor& w_down, const at::Tensor& b_down,
    const at::Tensor& w_up, const at::Tensor& b_up, const std::optional<at::Tensor>& index,
    std::string_view activation, bool save_hidden) {
  const pha_adapter_shape s = check_shapes(x, w_down, w_up);
  check_tensor("b_down", b_down, x, x.scalar_type(), {s.sets, s.rank});
  check_tensor("b_up", b_up, x, x.scalar_type(), {s.sets, s.dim});
  const pha_activation act = parse_activation(activation);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t* index_ptr = check_index(index, x, s);

  // The pre-activation is always needed between the two products; returned when asked.
  at::Tensor hidden = at::empty({s.batch, s.tokens, s.rank}, x.options().dtype(at::kFloat));
  at::Tensor out = at::empty_like(x);
  check_launch(pha_hyper_adapter_forward(dtype_code(x), act, s, x.data_ptr(), w_down.data_ptr(),
                                         b_down.data_ptr(), w_up.data_ptr(), b_up.data_ptr(),
                                         index_ptr, hidden.data_ptr<float>(), out.data_ptr(),
                                         c10::cuda::getCurrentCUDAStream()),
               "hyper_adapter_forward");
  if (!save_hidden) hidden = at::empty({0}, x.options().dtype(at::kFloat));
  return {out, hidden};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> hyper_adapter_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w_down,
    const at::Tensor& w_up, const at::Tensor& hidden, const std::optional<at::Tensor>& index,
    std::string_view activation) {
  const pha_adapter_shape s = check_shapes(x, w_down, w_up);
  check_tensor("grad_out", grad_out, x, x.scalar_type(), {s.batch, s.tokens, s.dim});
  check_tensor("hidden (the fp32 pre-activation saved by the forward)", hidden, x, at::kFloat,
               {s.batch, s.tokens, s.rank});
  const pha_activation act = parse_activation(activation);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t* index_ptr = check_index(index, x, s);

  // Instances sorted by set (stable: a fixed summation order) and each set's segment.
  at::Tensor order, segments;
  const auto long_options = x.options().dtype(at::kLong);
  if (index.has_value()) {
    auto [sorted_sets, sorted_order] = index->sort(std::optional<bool>(true), /*dim=*/0);
    order = sorted_order.contiguous();
    segments = at::searchsorted(sorted_sets, at::arange(s.sets + 1, long_options)).contiguous();
  } else {
    order = at::arange(s.batch, long_options);
    segments = at::arange(s.batch + 1, long_options);
  }

  at::Tensor grad_hidden = at::empty({s.batch, s.tokens, s.rank}, x.options().dtype(at::kFloat));
  at::Tensor grad_x = at::empty_like(x);
  at::Tensor grad_w_down = at::empty_like(w_down);
  at::Tensor grad_b_down = at::empty({s.sets, s.rank}, x.options());
  at::Tensor grad_w_up = at::empty_like(w_up);
  at::Tensor grad_b_up = at::empty({s.sets, s.dim}, x.options());
  check_launch(
      pha_hyper_adapter_backward(
          dtype_code(x), act, s, grad_out.data_ptr(), x.data_ptr(), w_down.data_ptr(),
          w_up.data_ptr(), hidden.data_ptr<float>(), index_ptr, order.data_ptr<int64_t>(),
          segments.data_ptr<int64_t>(), grad_hidden.data_ptr<float>(), grad_x.data_ptr(),
          grad_w_down.data_ptr(), grad_b_down.data_ptr(), grad_w_up.data_ptr(),
          grad_b_up.data_ptr(), c10::cuda::getCurrentCUDAStream()),
      "hyper_adapter_backward");
  return {grad_x, grad_w_down, grad_b_down, grad_w_up, grad_b_up};
}

}  // namespace

TORCH_LIBRARY_IMPL(pha_C, CUDA, m) {
  m.impl("hyper_adapter_forward", &hyper_adapter_forward);
  m.impl("hyper_adapter_backward", &hyper_adapter_backward);
}

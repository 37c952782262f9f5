// CUDA kernels of hyper_adapter behind the torch-free C interface of hyper_adapter.h.
//
// Same decomposition as the Triton backend (kernels/hyper_adapter.py): every product of
// the op is one of two tiled shared-memory GEMMs,
//   instance_matmul_kernel  c[b] = a_act(a[b]) @ W[g(b)] (+ bias[g]) (* act'(h[b]))
//     forward   hidden = x @ w_down + b_down (fp32);      out = act(hidden) @ w_up + b_up
//     backward  grad_hidden = (grad_out @ w_up^T) * act'(hidden);  grad_x = grad_hidden @ w_down^T
//   set_grad_kernel         dW[g] = sum over the instances of set g of a_act(a[b])^T @ m[b],
//                           dbias[g] = the column sums of those m[b]
//     grad_w_up = act(hidden)^T @ grad_out;  grad_w_down = x^T @ grad_hidden
// The per-set sums walk the instances in the caller's sorted order, one thread block per
// output tile: no atomics, deterministic. Products accumulate in fp32 with both operands
// rounded to the input precision first (as the torch reference computes in that dtype).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "hyper_adapter.h"

namespace {

constexpr int kTile = 32;          // kTile x kTile output tiles, reduction steps of kTile
constexpr int kRowsPerThread = 4;  // a (kTile, kThreadRows) thread block covers a tile
constexpr int kThreadRows = kTile / kRowsPerThread;
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kGeluCubic = 0.044715f;

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16(v);
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half(v);
}

// v at T's precision, in fp32: the operands of every product are rounded to the op's dtype.
template <typename T>
__device__ __forceinline__ float rounded(float v) {
  return to_float(from_float<T>(v));
}

__device__ __forceinline__ float activate(float h, pha_activation act) {
  switch (act) {
    case PHA_ACT_RELU:
      return h < 0.f ? 0.f : h;  // not fmaxf: NaN must stay NaN, as in torch.relu
    case PHA_ACT_GELU:
      return 0.5f * h * (1.f + tanhf(kSqrt2OverPi * (h + kGeluCubic * h * h * h)));
    case PHA_ACT_SILU:
      return h / (1.f + expf(-h));
    default:
      return h;
  }
}

// g * act'(h). relu selects rather than multiplies, as torch's threshold_backward does: a
// NaN or Inf g where h <= 0 gives 0, and a NaN h passes g.
__device__ __forceinline__ float backprop(float h, float g, pha_activation act) {
  switch (act) {
    case PHA_ACT_RELU:
      return h <= 0.f ? 0.f : g;
    case PHA_ACT_GELU: {
      const float th = tanhf(kSqrt2OverPi * (h + kGeluCubic * h * h * h));
      const float du = kSqrt2OverPi * (1.f + 3.f * kGeluCubic * h * h);
      return g * (0.5f * (1.f + th) + 0.5f * h * (1.f - th * th) * du);
    }
    case PHA_ACT_SILU: {
      const float s = 1.f / (1.f + expf(-h));
      return g * (s * (1.f + h * (1.f - s)));
    }
    default:
      return g;
  }
}

// One kTile x kTile tile of c[b] = a_act(a[b]) @ W[g] (+ bias[g]) (* epi_dact'(h[b])), with
// a[b] [T, K], c[b] and h[b] [T, N], W[g] element (k, n) at g*stride_wg + k*stride_wk +
// n*stride_wn. grid (B * ceil(T / kTile), ceil(N / kTile)), block (kTile, kThreadRows).
template <typename TA, typename TW, typename TC>
__global__ void instance_matmul_kernel(const TA* __restrict__ a, const TW* __restrict__ w,
                                       const TW* __restrict__ bias, const float* __restrict__ h,
                                       TC* __restrict__ c, const int64_t* __restrict__ index,
                                       int64_t T, int64_t K, int64_t N, int64_t G,
                                       int64_t stride_wg, int64_t stride_wk, int64_t stride_wn,
                                       pha_activation a_act, pha_activation epi_dact) {
  __shared__ float a_tile[kTile][kTile + 1];  // [t][k]
  __shared__ float w_tile[kTile][kTile + 1];  // [k][n]
  const int64_t t_tiles = (T + kTile - 1) / kTile;
  const int64_t b = blockIdx.x / t_tiles;
  const int64_t t0 = (blockIdx.x % t_tiles) * kTile;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t g = index != nullptr ? index[b] : b;
  // The caller checked the range; a bad id still never reads out of bounds (weights 0).
  const bool g_ok = g >= 0 && g < G;
  const TW* w_set = w + (g_ok ? g : 0) * stride_wg;
  const TA* a_rows = a + b * T * K;

  float acc[kRowsPerThread] = {};
  for (int64_t k0 = 0; k0 < K; k0 += kTile) {
    for (int i = 0; i < kRowsPerThread; ++i) {
      const int row = ty + i * kThreadRows;
      const int64_t t = t0 + row, k = k0 + tx, wk = k0 + row, n = n0 + tx;
      a_tile[row][tx] =
          t < T && k < K ? rounded<TW>(activate(to_float(a_rows[t * K + k]), a_act)) : 0.f;
      w_tile[row][tx] =
          g_ok && wk < K && n < N ? to_float(w_set[wk * stride_wk + n * stride_wn]) : 0.f;
    }
    __syncthreads();
#pragma unroll 8
    for (int kk = 0; kk < kTile; ++kk) {
      const float wv = w_tile[kk][tx];
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i) acc[i] += a_tile[ty + i * kThreadRows][kk] * wv;
    }
    __syncthreads();
  }

  const int64_t n = n0 + tx;
  if (n >= N) return;
  const float bias_v = bias != nullptr && g_ok ? to_float(bias[g * N + n]) : 0.f;
  for (int i = 0; i < kRowsPerThread; ++i) {
    const int64_t t = t0 + ty + i * kThreadRows;
    if (t >= T) break;
    const int64_t offset = (b * T + t) * N + n;
    float v = acc[i] + bias_v;
    if (epi_dact != PHA_ACT_IDENTITY) v = backprop(h[offset], v, epi_dact);
    c[offset] = from_float<TC>(v);
  }
}

// One kTile x kTile tile of dw[g] = sum_{s in [segments[g], segments[g+1])} a_act(a[b])^T @
// m[b], b = order[s], with a[b] [T, M], m[b] [T, N], dw[g] [M, N]; the blocks of the first
// M-tile also write dbias[g] = the column sums of those m[b].
// grid (G * max(1, ceil(M / kTile)), ceil(N / kTile)), block (kTile, kThreadRows).
template <typename TA, typename TM, typename TW>
__global__ void set_grad_kernel(const TA* __restrict__ a, const TM* __restrict__ m,
                                TW* __restrict__ dw, TW* __restrict__ dbias,
                                const int64_t* __restrict__ order,
                                const int64_t* __restrict__ segments, int64_t T, int64_t M,
                                int64_t N, pha_activation a_act) {
  __shared__ float a_tile[kTile][kTile + 1];  // [t][m]
  __shared__ float m_tile[kTile][kTile + 1];  // [t][n]
  const int64_t m_tiles = M > 0 ? (M + kTile - 1) / kTile : 1;
  const int64_t g = blockIdx.x / m_tiles;
  const int64_t m0 = (blockIdx.x % m_tiles) * kTile;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int tx = threadIdx.x, ty = threadIdx.y;
  const bool writes_bias = m0 == 0 && ty == 0;

  float acc[kRowsPerThread] = {};  // rows m0 + ty + i * kThreadRows, column n0 + tx
  float bias_acc = 0.f;
  for (int64_t s = segments[g]; s < segments[g + 1]; ++s) {
    const int64_t b = order[s];
    for (int64_t t0 = 0; t0 < T; t0 += kTile) {
      for (int i = 0; i < kRowsPerThread; ++i) {
        const int row = ty + i * kThreadRows;
        const int64_t t = t0 + row, col_m = m0 + tx, col_n = n0 + tx;
        const int64_t token = b * T + t;
        a_tile[row][tx] =
            t < T && col_m < M ? rounded<TW>(activate(to_float(a[token * M + col_m]), a_act)) : 0.f;
        m_tile[row][tx] = t < T && col_n < N ? to_float(m[token * N + col_n]) : 0.f;
      }
      __syncthreads();
#pragma unroll 8
      for (int tt = 0; tt < kTile; ++tt) {
        const float mv = m_tile[tt][tx];
        if (writes_bias) bias_acc += mv;
        const float mr = rounded<TW>(mv);
#pragma unroll
        for (int i = 0; i < kRowsPerThread; ++i) acc[i] += a_tile[tt][ty + i * kThreadRows] * mr;
      }
      __syncthreads();
    }
  }

  const int64_t n = n0 + tx;
  if (n >= N) return;
  for (int i = 0; i < kRowsPerThread; ++i) {
    const int64_t row = m0 + ty + i * kThreadRows;
    if (row < M) dw[(g * M + row) * N + n] = from_float<TW>(acc[i]);
  }
  if (writes_bias) dbias[g * N + n] = from_float<TW>(bias_acc);
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Whether a grid of x * y blocks can be launched (x <= 2^31 - 1, y <= 65535).
bool grid_fits(int64_t x, int64_t y) { return x <= 2147483647LL && y <= 65535; }

template <typename TA, typename TW, typename TC>
cudaError_t launch_instance_matmul(const TA* a, const TW* w, const TW* bias, const float* h,
                                   TC* c, const int64_t* index, const pha_adapter_shape& s,
                                   int64_t K, int64_t N, int64_t stride_wg, int64_t stride_wk,
                                   int64_t stride_wn, pha_activation a_act,
                                   pha_activation epi_dact, cudaStream_t stream) {
  const int64_t blocks_x = s.batch * ceil_div(s.tokens, kTile), blocks_y = ceil_div(N, kTile);
  if (blocks_x == 0 || blocks_y == 0) return cudaSuccess;  // nothing to write
  if (!grid_fits(blocks_x, blocks_y)) return cudaErrorInvalidConfiguration;
  const dim3 grid(static_cast<unsigned>(blocks_x), static_cast<unsigned>(blocks_y));
  instance_matmul_kernel<TA, TW, TC><<<grid, dim3(kTile, kThreadRows), 0, stream>>>(
      a, w, bias, h, c, index, s.tokens, K, N, s.sets, stride_wg, stride_wk, stride_wn, a_act,
      epi_dact);
  return cudaGetLastError();
}

template <typename TA, typename TM, typename TW>
cudaError_t launch_set_grad(const TA* a, const TM* m, TW* dw, TW* dbias, const int64_t* order,
                            const int64_t* segments, const pha_adapter_shape& s, int64_t M,
                            int64_t N, pha_activation a_act, cudaStream_t stream) {
  // At least one M-tile per set, so that dbias is written even when M == 0.
  const int64_t blocks_x = s.sets * (M > 0 ? ceil_div(M, kTile) : 1), blocks_y = ceil_div(N, kTile);
  if (blocks_x == 0 || blocks_y == 0) return cudaSuccess;
  if (!grid_fits(blocks_x, blocks_y)) return cudaErrorInvalidConfiguration;
  const dim3 grid(static_cast<unsigned>(blocks_x), static_cast<unsigned>(blocks_y));
  set_grad_kernel<TA, TM, TW><<<grid, dim3(kTile, kThreadRows), 0, stream>>>(
      a, m, dw, dbias, order, segments, s.tokens, M, N, a_act);
  return cudaGetLastError();
}

template <typename T>
cudaError_t forward_typed(pha_activation act, const pha_adapter_shape& s, const T* x, const T* w_down,
                   const T* b_down, const T* w_up, const T* b_up, const int64_t* index,
                   float* hidden, T* out, cudaStream_t stream) {
  const int64_t d = s.dim, r = s.rank;
  cudaError_t err = launch_instance_matmul<T, T, float>(x, w_down, b_down, nullptr, hidden, index,
                                                        s, d, r, d * r, r, 1, PHA_ACT_IDENTITY,
                                                        PHA_ACT_IDENTITY, stream);
  if (err != cudaSuccess) return err;
  return launch_instance_matmul<float, T, T>(hidden, w_up, b_up, nullptr, out, index, s, r, d,
                                             r * d, d, 1, act, PHA_ACT_IDENTITY, stream);
}

template <typename T>
cudaError_t backward_typed(pha_activation act, const pha_adapter_shape& s, const T* grad_out,
                    const T* x, const T* w_down, const T* w_up, const float* hidden,
                    const int64_t* index, const int64_t* order, const int64_t* segments,
                    float* grad_hidden, T* grad_x, T* grad_w_down, T* grad_b_down, T* grad_w_up,
                    T* grad_b_up, cudaStream_t stream) {
  const int64_t d = s.dim, r = s.rank;
  // grad_hidden = (grad_out @ w_up^T) * act'(hidden): w_up[g] read transposed.
  cudaError_t err = launch_instance_matmul<T, T, float>(grad_out, w_up, nullptr, hidden,
                                                        grad_hidden, index, s, d, r, r * d, 1, d,
                                                        PHA_ACT_IDENTITY, act, stream);
  if (err != cudaSuccess) return err;
  // grad_x = grad_hidden @ w_down^T.
  err = launch_instance_matmul<float, T, T>(grad_hidden, w_down, nullptr, nullptr, grad_x, index,
                                            s, r, d, d * r, 1, r, PHA_ACT_IDENTITY,
                                            PHA_ACT_IDENTITY, stream);
  if (err != cudaSuccess) return err;
  err = launch_set_grad<float, T, T>(hidden, grad_out, grad_w_up, grad_b_up, order, segments, s, r,
                                     d, act, stream);
  if (err != cudaSuccess) return err;
  return launch_set_grad<T, float, T>(x, grad_hidden, grad_w_down, grad_b_down, order, segments, s,
                                      d, r, PHA_ACT_IDENTITY, stream);
}

template <typename T>
struct Tag {
  using type = T;
};

// Returns f(Tag<T>{}) with the element type T of `dtype`.
template <typename F>
cudaError_t dispatch(pha_dtype dtype, F&& f) {
  switch (dtype) {
    case PHA_F32:
      return f(Tag<float>{});
    case PHA_BF16:
      return f(Tag<__nv_bfloat16>{});
    case PHA_F16:
      return f(Tag<__half>{});
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace

extern "C" cudaError_t pha_hyper_adapter_forward(pha_dtype dtype, pha_activation activation,
                                                 pha_adapter_shape shape, const void* x,
                                                 const void* w_down, const void* b_down,
                                                 const void* w_up, const void* b_up,
                                                 const int64_t* index, float* hidden, void* out,
                                                 cudaStream_t stream) {
  return dispatch(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return forward_typed<T>(activation, shape, static_cast<const T*>(x), static_cast<const T*>(w_down),
                     static_cast<const T*>(b_down), static_cast<const T*>(w_up),
                     static_cast<const T*>(b_up), index, hidden, static_cast<T*>(out), stream);
  });
}

extern "C" cudaError_t pha_hyper_adapter_backward(
    pha_dtype dtype, pha_activation activation, pha_adapter_shape shape, const void* grad_out,
    const void* x, const void* w_down, const void* w_up, const float* hidden,
    const int64_t* index, const int64_t* order, const int64_t* segments, float* grad_hidden,
    void* grad_x, void* grad_w_down, void* grad_b_down, void* grad_w_up, void* grad_b_up,
    cudaStream_t stream) {
  return dispatch(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return backward_typed<T>(activation, shape, static_cast<const T*>(grad_out),
                      static_cast<const T*>(x), static_cast<const T*>(w_down),
                      static_cast<const T*>(w_up), hidden, index, order, segments, grad_hidden,
                      static_cast<T*>(grad_x), static_cast<T*>(grad_w_down),
                      static_cast<T*>(grad_b_down), static_cast<T*>(grad_w_up),
                      static_cast<T*>(grad_b_up), stream);
  });
}

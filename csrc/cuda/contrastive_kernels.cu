// CUDA kernels of the contrastive losses (torch-free; launchers declared in contrastive.h).
//
// Both losses are a row-wise log-softmax over scores S = A @ B^T / tau between
// L2-normalised rows, with a set of positives per row:
//   supcon:    A = B = zn, the diagonal left out, j a positive of i when y_j == y_i;
//   prototype: A = zn, B = pn, the positive of i is column y_i (left out of the
//              denominator when exclude_positive).
//   row loss_i = lse_i - pos_i / n_i  (pos_i: sum of i's positive scores, n_i: their count)
// The B x B (B x K) score matrix never exists in memory; it is recomputed in 32 x 32 tiles
// through shared memory (fp32 SIMT, fp32 accumulation whatever the input dtype):
//   forward   one block per 32 rows: per-lane online log-sum-exp over column tiles, then
//             a warp-level merge -> lse, pos; a one-block reduction -> loss.
//   backward  dS_ij = coef_i softmax_ij - pcoef_i [j positive for i]; the row pass
//             (dA_i = sum_j dS_ij B_j) and the column pass (dB_j = sum_i dS_ij A_i) each own
//             their output rows (one block per 32 rows x 32 columns of D): no atomics.
// Labels are only compared, never used as addresses: an out-of-range prototype id cannot
// read out of bounds (it poisons its row with NaN instead).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math_constants.h>

#include "contrastive.h"

namespace {

constexpr int kTile = 32;                     // score tile rows = columns = D chunk = warp
constexpr int kWarps = 8;                     // warps per block
constexpr int kThreads = kTile * kWarps;      // 256
constexpr int kRowsPerWarp = kTile / kWarps;  // tile rows each warp (thread) handles
constexpr float kEps = 1e-12f;                // F.normalize's default

template <typename T>
__device__ __forceinline__ float to_float(T v);
template <>
__device__ __forceinline__ float to_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ float to_float<__half>(__half v) { return __half2float(v); }
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Sum over the block (kThreads threads); every thread gets the result.
__device__ float block_sum(float v) {
  __shared__ float partial[kWarps];
  __syncthreads();  // `partial` may still be read by a previous call
  v = warp_sum(v);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
  __syncthreads();
  float total = 0.f;
  for (int w = 0; w < kWarps; ++w) total += partial[w];
  return total;
}

// xn = x / max(||x||, eps) row-wise in fp32, norm = max(||x||, eps) (NaN stays NaN).
// One warp per row.
template <typename T>
__global__ void normalize_rows_kernel(const T* __restrict__ x, int64_t rows, int64_t d,
                                      float* __restrict__ xn, float* __restrict__ norm) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= rows) return;
  const T* xr = x + r * d;
  float ss = 0.f;
  for (int64_t c = lane; c < d; c += 32) {
    const float v = to_float(xr[c]);
    ss += v * v;
  }
  float n = sqrtf(warp_sum(ss));
  n = n < kEps ? kEps : n;  // not fmaxf: that would turn a NaN norm into eps
  for (int64_t c = lane; c < d; c += 32) xn[r * d + c] = to_float(xr[c]) / n;
  if (lane == 0) norm[r] = n;
}

// dx = (dxn - xn (xn . dxn)) / norm, the backward of normalize_rows. One warp per row.
template <typename T>
__global__ void normalize_backward_kernel(const float* __restrict__ xn,
                                          const float* __restrict__ norm,
                                          const float* __restrict__ dxn, int64_t rows,
                                          int64_t d, T* __restrict__ dx) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= rows) return;
  float dot = 0.f;
  for (int64_t c = lane; c < d; c += 32) dot += xn[r * d + c] * dxn[r * d + c];
  dot = warp_sum(dot);
  const float inv = 1.f / norm[r];
  for (int64_t c = lane; c < d; c += 32) {
    dx[r * d + c] = from_float<T>((dxn[r * d + c] - xn[r * d + c] * dot) * inv);
  }
}

// n_pos[i] = |P(i)| = number of other rows with label y_i (B x B compares, no memory).
__global__ void count_positives_kernel(const int64_t* __restrict__ labels, int64_t n,
                                       float* __restrict__ n_pos) {
  __shared__ int64_t tile[kThreads];
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t yi = i < n ? labels[i] : 0;
  int64_t same = 0;
  for (int64_t j0 = 0; j0 < n; j0 += kThreads) {
    if (j0 + threadIdx.x < n) tile[threadIdx.x] = labels[j0 + threadIdx.x];
    __syncthreads();
    const int64_t len = n - j0 < kThreads ? n - j0 : kThreads;
    for (int64_t t = 0; t < len; ++t) same += tile[t] == yi;
    __syncthreads();
  }
  if (i < n) n_pos[i] = static_cast<float>(same - 1);
}

struct TileSmem {
  float a[kTile][kTile + 1];  // +1: column reads across lanes hit distinct banks
  float b[kTile][kTile + 1];
  float ds[kTile][kTile + 1];
};

// acc[k] = A[i0 + r] . B[j0 + lane] with r = warp + kWarps * k (0 outside the matrices).
// Every thread of the block must call it (it synchronises).
__device__ void dot_tile(const float* __restrict__ A, const float* __restrict__ B, int64_t i0,
                         int64_t j0, int64_t M, int64_t N, int64_t D, TileSmem& sm,
                         float acc[kRowsPerWarp]) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int k = 0; k < kRowsPerWarp; ++k) acc[k] = 0.f;
  for (int64_t d0 = 0; d0 < D; d0 += kTile) {
    const int64_t d = d0 + lane;
    for (int k = 0; k < kRowsPerWarp; ++k) {
      const int r = warp + kWarps * k;
      sm.a[r][lane] = (i0 + r < M && d < D) ? A[(i0 + r) * D + d] : 0.f;
      sm.b[r][lane] = (j0 + r < N && d < D) ? B[(j0 + r) * D + d] : 0.f;
    }
    __syncthreads();
    for (int c = 0; c < kTile; ++c) {
      const float bv = sm.b[lane][c];
      for (int k = 0; k < kRowsPerWarp; ++k) acc[k] += sm.a[warp + kWarps * k][c] * bv;
    }
    __syncthreads();
  }
}

struct Pair {
  bool positive;  // j is a positive of i
  bool denom;     // j is in i's log-sum-exp
};

// self: supcon (columns are the rows themselves, labelled yj); else prototype (yj = j).
__device__ __forceinline__ Pair classify(bool self, bool exclude_positive, int64_t i, int64_t j,
                                         int64_t yi, int64_t yj) {
  if (self) {
    const bool other = i != j;
    return {other && yi == yj, other};
  }
  const bool positive = yi == yj;
  return {positive, !(exclude_positive && positive)};
}

__device__ __forceinline__ int64_t column_label(bool self, const int64_t* labels, int64_t j,
                                                int64_t N) {
  return self ? (j < N ? labels[j] : -1) : j;
}

// lse[i] = log sum_{j in denominator} exp S_ij (-inf when empty), pos[i] = sum of positive
// S_ij, for the 32 rows of this block.
__global__ void row_stats_kernel(const float* __restrict__ A, const float* __restrict__ B,
                                 const int64_t* __restrict__ labels, int64_t M, int64_t N,
                                 int64_t D, float scale, bool self, bool exclude_positive,
                                 float* __restrict__ lse, float* __restrict__ pos) {
  __shared__ TileSmem sm;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t i0 = static_cast<int64_t>(blockIdx.x) * kTile;
  float m[kRowsPerWarp], l[kRowsPerWarp], p[kRowsPerWarp];
  int64_t yi[kRowsPerWarp];
  for (int k = 0; k < kRowsPerWarp; ++k) {
    const int64_t i = i0 + warp + kWarps * k;
    yi[k] = i < M ? labels[i] : -1;
    m[k] = -CUDART_INF_F;
    l[k] = 0.f;
    p[k] = 0.f;
  }
  for (int64_t j0 = 0; j0 < N; j0 += kTile) {
    float s[kRowsPerWarp];
    dot_tile(A, B, i0, j0, M, N, D, sm, s);
    const int64_t j = j0 + lane;
    const int64_t yj = column_label(self, labels, j, N);
    for (int k = 0; k < kRowsPerWarp; ++k) {
      const int64_t i = i0 + warp + kWarps * k;
      if (i >= M || j >= N) continue;
      const float sij = s[k] * scale;
      const Pair pair = classify(self, exclude_positive, i, j, yi[k], yj);
      if (pair.positive) p[k] += sij;
      if (!pair.denom) continue;
      // Per-lane online log-sum-exp; a NaN score makes l NaN (NaN in, NaN out).
      if (sij > m[k]) {
        l[k] = l[k] * expf(m[k] - sij) + 1.f;
        m[k] = sij;
      } else {
        l[k] += expf(sij - m[k]);
      }
    }
  }
  for (int k = 0; k < kRowsPerWarp; ++k) {
    // Merge the 32 lanes' (max, sum) pairs.
    float mk = m[k], lk = l[k];
    for (int offset = 16; offset > 0; offset >>= 1) {
      const float mo = __shfl_xor_sync(0xffffffffu, mk, offset);
      const float lo = __shfl_xor_sync(0xffffffffu, lk, offset);
      const float mx = fmaxf(mk, mo);
      lk = mx == -CUDART_INF_F ? lk + lo : lk * expf(mk - mx) + lo * expf(mo - mx);
      mk = mx;
    }
    const float pk = warp_sum(p[k]);
    const int64_t i = i0 + warp + kWarps * k;
    if (lane == 0 && i < M) {
      float out = lk == 0.f ? -CUDART_INF_F : mk + logf(lk);
      if (!self && (yi[k] < 0 || yi[k] >= N)) out = CUDART_NAN_F;
      lse[i] = out;
      pos[i] = pk;
    }
  }
}

// out (+)= the row pass (column_pass false: out[i] = sum_j dS_ij B_j, i in this block's 32
// rows) or the column pass (out[j] = sum_i dS_ij A_i, j in this block's 32 rows of B), for
// the 32 columns of D at blockIdx.y * 32.
__global__ void grad_pass_kernel(const float* __restrict__ A, const float* __restrict__ B,
                                 const int64_t* __restrict__ labels,
                                 const float* __restrict__ lse, const float* __restrict__ coef,
                                 const float* __restrict__ pcoef, int64_t M, int64_t N,
                                 int64_t D, float scale, bool self, bool exclude_positive,
                                 bool column_pass, bool accumulate, float* __restrict__ out) {
  __shared__ TileSmem sm;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t own0 = static_cast<int64_t>(blockIdx.x) * kTile;  // first output row
  const int64_t own_rows = column_pass ? N : M;
  const int64_t d = static_cast<int64_t>(blockIdx.y) * kTile + lane;
  const float* values = column_pass ? A : B;  // the rows summed over
  const int64_t value_rows = column_pass ? M : N;
  float acc[kRowsPerWarp] = {};
  for (int64_t t0 = 0; t0 < value_rows; t0 += kTile) {
    const int64_t i0 = column_pass ? t0 : own0, j0 = column_pass ? own0 : t0;
    float s[kRowsPerWarp];
    dot_tile(A, B, i0, j0, M, N, D, sm, s);
    const int64_t j = j0 + lane;
    const int64_t yj = column_label(self, labels, j, N);
    for (int k = 0; k < kRowsPerWarp; ++k) {
      const int r = warp + kWarps * k;
      const int64_t i = i0 + r;
      float g = 0.f;
      if (i < M && j < N) {
        const Pair pair = classify(self, exclude_positive, i, j, labels[i], yj);
        const float softmax = pair.denom ? expf(s[k] * scale - lse[i]) : 0.f;
        g = coef[i] * softmax - (pair.positive ? pcoef[i] : 0.f);
      }
      sm.ds[r][lane] = g;  // dS[i0 + r][j0 + lane]
      sm.a[r][lane] = (t0 + r < value_rows && d < D) ? values[(t0 + r) * D + d] : 0.f;
    }
    __syncthreads();
    for (int k = 0; k < kRowsPerWarp; ++k) {
      const int r = warp + kWarps * k;  // output row own0 + r
      for (int c = 0; c < kTile; ++c) {
        const float g = column_pass ? sm.ds[c][r] : sm.ds[r][c];
        acc[k] += g * sm.a[c][lane];
      }
    }
    __syncthreads();
  }
  for (int k = 0; k < kRowsPerWarp; ++k) {
    const int64_t o = own0 + warp + kWarps * k;
    if (o < own_rows && d < D) out[o * D + d] = (accumulate ? out[o * D + d] : 0.f) + acc[k];
  }
}

// loss = mean over rows with a positive (n_pos null: every row has exactly one) of
// lse - pos / n_pos; 0 * sum(probe) (0, or NaN if an input was NaN) when there is nothing
// to contrast (no such row, or K == 1 with the positive excluded). One block.
__global__ void finish_loss_kernel(const float* __restrict__ lse, const float* __restrict__ pos,
                                   const float* __restrict__ n_pos, int64_t B,
                                   const float* __restrict__ probe, int64_t probe_len,
                                   bool nothing_to_contrast, float* __restrict__ loss) {
  float sum = 0.f, rows = 0.f, probe_sum = 0.f;
  for (int64_t i = threadIdx.x; i < B; i += kThreads) {
    const float n = n_pos ? n_pos[i] : 1.f;
    if (n > 0.f) {
      sum += lse[i] - pos[i] / n;
      rows += 1.f;
    }
  }
  for (int64_t i = threadIdx.x; i < probe_len; i += kThreads) probe_sum += probe[i];
  sum = block_sum(sum);
  rows = block_sum(rows);
  probe_sum = block_sum(probe_sum);
  if (threadIdx.x == 0) {
    const bool empty = nothing_to_contrast || rows == 0.f;  // also an empty batch
    *loss = empty ? 0.f * probe_sum : sum / rows;
  }
}

// coef_i = grad / (rows * tau) on rows with a positive (else 0), pcoef_i = coef_i / n_i.
// One block.
__global__ void grad_coefs_kernel(const float* __restrict__ grad_loss,
                                  const float* __restrict__ n_pos, int64_t B, float inv_tau,
                                  float* coef, float* pcoef) {  // may alias (prototype)
  float rows = 0.f;
  for (int64_t i = threadIdx.x; i < B; i += kThreads) rows += (n_pos ? n_pos[i] : 1.f) > 0.f;
  rows = block_sum(rows);
  const float w = *grad_loss * inv_tau / fmaxf(rows, 1.f);
  for (int64_t i = threadIdx.x; i < B; i += kThreads) {
    const float n = n_pos ? n_pos[i] : 1.f;
    coef[i] = n > 0.f ? w : 0.f;
    pcoef[i] = n > 0.f ? w / n : 0.f;
  }
}

unsigned blocks_for(int64_t items, int64_t per_block) {
  return static_cast<unsigned>((items + per_block - 1) / per_block);
}

template <typename T>
void normalize_rows(const void* x, int64_t rows, int64_t d, float* xn, float* norm,
                    cudaStream_t stream) {
  if (rows == 0) return;
  normalize_rows_kernel<T><<<blocks_for(rows, kWarps), kThreads, 0, stream>>>(
      static_cast<const T*>(x), rows, d, xn, norm);
}

void normalize_rows(pha_loss_dtype dtype, const void* x, int64_t rows, int64_t d, float* xn,
                    float* norm, cudaStream_t stream) {
  switch (dtype) {
    case PHA_LOSS_F32: return normalize_rows<float>(x, rows, d, xn, norm, stream);
    case PHA_LOSS_BF16: return normalize_rows<__nv_bfloat16>(x, rows, d, xn, norm, stream);
    case PHA_LOSS_F16: return normalize_rows<__half>(x, rows, d, xn, norm, stream);
  }
}

template <typename T>
void normalize_backward(const float* xn, const float* norm, const float* dxn, int64_t rows,
                        int64_t d, void* dx, cudaStream_t stream) {
  if (rows == 0) return;
  normalize_backward_kernel<T><<<blocks_for(rows, kWarps), kThreads, 0, stream>>>(
      xn, norm, dxn, rows, d, static_cast<T*>(dx));
}

void normalize_backward(pha_loss_dtype dtype, const float* xn, const float* norm,
                        const float* dxn, int64_t rows, int64_t d, void* dx,
                        cudaStream_t stream) {
  switch (dtype) {
    case PHA_LOSS_F32: return normalize_backward<float>(xn, norm, dxn, rows, d, dx, stream);
    case PHA_LOSS_BF16:
      return normalize_backward<__nv_bfloat16>(xn, norm, dxn, rows, d, dx, stream);
    case PHA_LOSS_F16: return normalize_backward<__half>(xn, norm, dxn, rows, d, dx, stream);
  }
}

void row_stats(const float* A, const float* B, const int64_t* labels, int64_t M, int64_t N,
               int64_t D, float temperature, bool self, bool exclude_positive, float* lse,
               float* pos, cudaStream_t stream) {
  if (M == 0) return;
  row_stats_kernel<<<blocks_for(M, kTile), kThreads, 0, stream>>>(
      A, B, labels, M, N, D, 1.f / temperature, self, exclude_positive, lse, pos);
}

// dA (row pass) and dB (column pass) for dS = coef softmax - pcoef [positive]; with
// same_output (supcon, A == B) both passes add into dA.
void gradients(const float* A, const float* B, const int64_t* labels, const float* lse,
               const float* coef, const float* pcoef, int64_t M, int64_t N, int64_t D,
               float temperature, bool self, bool exclude_positive, float* dA, float* dB,
               cudaStream_t stream) {
  const float scale = 1.f / temperature;
  const unsigned d_chunks = blocks_for(D, kTile);
  if (M > 0 && D > 0) {
    grad_pass_kernel<<<dim3(blocks_for(M, kTile), d_chunks), kThreads, 0, stream>>>(
        A, B, labels, lse, coef, pcoef, M, N, D, scale, self, exclude_positive, false, false,
        dA);
  }
  if (N > 0 && D > 0) {
    grad_pass_kernel<<<dim3(blocks_for(N, kTile), d_chunks), kThreads, 0, stream>>>(
        A, B, labels, lse, coef, pcoef, M, N, D, scale, self, exclude_positive, true,
        dB == dA && M > 0, dB);
  }
}

}  // namespace

extern "C" {

// Workspace: zn [B*D] | norm [B] | pos, n_pos, coef, pcoef [B each] | dzn [B*D].
size_t pha_supcon_workspace_floats(int64_t B, int64_t D) {
  return static_cast<size_t>(2 * B * D + 5 * B);
}

cudaError_t pha_supcon_forward(const void* z, pha_loss_dtype dtype, const int64_t* labels,
                               int64_t B, int64_t D, float temperature, float* workspace,
                               float* lse, float* loss, cudaStream_t stream) {
  float* zn = workspace;
  float* norm = zn + B * D;
  float* pos = norm + B;
  float* n_pos = pos + B;
  normalize_rows(dtype, z, B, D, zn, norm, stream);
  row_stats(zn, zn, labels, B, B, D, temperature, true, false, lse, pos, stream);
  if (B > 0) count_positives_kernel<<<blocks_for(B, kThreads), kThreads, 0, stream>>>(
      labels, B, n_pos);
  finish_loss_kernel<<<1, kThreads, 0, stream>>>(lse, pos, n_pos, B, norm, B, false, loss);
  return cudaGetLastError();
}

cudaError_t pha_supcon_backward(const float* grad_loss, const void* z, pha_loss_dtype dtype,
                                const int64_t* labels, const float* lse, int64_t B, int64_t D,
                                float temperature, float* workspace, void* grad_z,
                                cudaStream_t stream) {
  float* zn = workspace;
  float* norm = zn + B * D;
  float* n_pos = norm + 2 * B;
  float* coef = n_pos + B;
  float* pcoef = coef + B;
  float* dzn = pcoef + B;
  normalize_rows(dtype, z, B, D, zn, norm, stream);
  if (B > 0) count_positives_kernel<<<blocks_for(B, kThreads), kThreads, 0, stream>>>(
      labels, B, n_pos);
  grad_coefs_kernel<<<1, kThreads, 0, stream>>>(grad_loss, n_pos, B, 1.f / temperature, coef,
                                                pcoef);
  // S is symmetric in zn: its gradient is the row pass plus the column pass.
  gradients(zn, zn, labels, lse, coef, pcoef, B, B, D, temperature, true, false, dzn, dzn,
            stream);
  normalize_backward(dtype, zn, norm, dzn, B, D, grad_z, stream);
  return cudaGetLastError();
}

// Workspace: zn [B*D] | pn [K*D] | norms [B + K] | pos, coef [B each] | dzn [B*D] | dpn [K*D].
size_t pha_prototype_workspace_floats(int64_t B, int64_t K, int64_t D) {
  return static_cast<size_t>(2 * (B + K) * D + (B + K) + 2 * B);
}

cudaError_t pha_prototype_forward(const void* z, const void* prototypes, pha_loss_dtype dtype,
                                  const int64_t* labels, int64_t B, int64_t K, int64_t D,
                                  float temperature, int exclude_positive, float* workspace,
                                  float* lse, float* loss, cudaStream_t stream) {
  float* zn = workspace;
  float* pn = zn + B * D;
  float* norms = pn + K * D;
  float* pos = norms + B + K;
  normalize_rows(dtype, z, B, D, zn, norms, stream);
  normalize_rows(dtype, prototypes, K, D, pn, norms + B, stream);
  row_stats(zn, pn, labels, B, K, D, temperature, false, exclude_positive != 0, lse, pos,
            stream);
  const bool nothing_to_contrast = exclude_positive && K == 1;
  finish_loss_kernel<<<1, kThreads, 0, stream>>>(lse, pos, nullptr, B, norms, B + K,
                                                 nothing_to_contrast, loss);
  return cudaGetLastError();
}

cudaError_t pha_prototype_backward(const float* grad_loss, const void* z, const void* prototypes,
                                   pha_loss_dtype dtype, const int64_t* labels, const float* lse,
                                   int64_t B, int64_t K, int64_t D, float temperature,
                                   int exclude_positive, float* workspace, void* grad_z,
                                   void* grad_prototypes, cudaStream_t stream) {
  const size_t bytes = dtype == PHA_LOSS_F32 ? 4 : 2;
  if (exclude_positive && K == 1) {  // the loss is a constant 0
    cudaMemsetAsync(grad_z, 0, bytes * B * D, stream);
    cudaMemsetAsync(grad_prototypes, 0, bytes * K * D, stream);
    return cudaGetLastError();
  }
  float* zn = workspace;
  float* pn = zn + B * D;
  float* norms = pn + K * D;
  float* coef = norms + B + K + B;
  float* dzn = coef + B;
  float* dpn = dzn + B * D;
  normalize_rows(dtype, z, B, D, zn, norms, stream);
  normalize_rows(dtype, prototypes, K, D, pn, norms + B, stream);
  // Every row has one positive (weight 1): pcoef = coef.
  grad_coefs_kernel<<<1, kThreads, 0, stream>>>(grad_loss, nullptr, B, 1.f / temperature, coef,
                                                coef);
  gradients(zn, pn, labels, lse, coef, coef, B, K, D, temperature, false, exclude_positive != 0,
            dzn, dpn, stream);
  normalize_backward(dtype, zn, norms, dzn, B, D, grad_z, stream);
  normalize_backward(dtype, pn, norms + B, dpn, K, D, grad_prototypes, stream);
  return cudaGetLastError();
}

}  // extern "C"

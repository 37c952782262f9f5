// Small GEMM building blocks for the fused hyper-adapter CPU kernels.
//
// Two shapes of product cover every matmul of the adapter's forward and backward:
//   rows:  C[i, :] = bias + sum_k A[i][k] * B[k, :]      A given by one pointer per row,
//          B a row-major panel (weights), C by one pointer per row (out / grad_x rows).
//   cols:  C[i, :] (+)= sum_k Ak[k][i] * Bk[k][:]         A and B given by one pointer per
//          k (token rows), i.e. C = A^T B summed over tokens (the weight gradients).
// Row-pointer operands let a token tile span several instances that share one weight
// set (the indexed case) without copying anything.
//
// Each block exists as a portable template (any accumulation type, used for float64 and
// when PHA_CPU_ISA=generic) and as an fp32 AVX-512 register-blocked micro-kernel
// (broadcast-FMA: MR rows x NV 16-lane vectors of accumulators), selected at run time.
#pragma once

#include <c10/util/BFloat16.h>
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "cpu_isa.h"

namespace pha_cpu {

// op_t is the type of the GEMM operands, acc_t that of the results (fp32 for bf16 operands).
template <typename op_t, typename acc_t = op_t>
struct GemmOps {
  // C rows c[i][0:N] = (bias ? bias : 0) + sum_k a[i][k] * B[k][0:N], i < M. B is a K x N
  // panel (row stride ldb = N), packed by pack_panel when that is set.
  void (*rows)(int64_t M, int64_t N, int64_t K, const op_t* const* a, const op_t* b,
               int64_t ldb, acc_t* const* c, const acc_t* bias);
  // c[i * ldc + j] (+)= sum_k ak[k][aoff + i] * bk[k][boff + j], i < M, j < N.
  void (*cols)(int64_t M, int64_t N, int64_t K, const op_t* const* ak, int64_t aoff,
               const op_t* const* bk, int64_t boff, acc_t* c, int64_t ldc, bool accumulate);
  // dst[j * ld_dst + i] = src[i * ld_src + j], i < rows, j < cols.
  void (*transpose)(int64_t rows, int64_t cols, const acc_t* src, int64_t ld_src, acc_t* dst,
                    int64_t ld_dst);
  // bfloat16 (raw bits) <-> acc_t, n elements; narrowing rounds to nearest even.
  void (*widen_bf16)(const uint16_t* src, acc_t* dst, int64_t n);
  void (*narrow_bf16)(const acc_t* src, uint16_t* dst, int64_t n);
  // sums[j] += sum_k rows[k][off + j], j < N, k < K in order (the bias gradients).
  void (*col_sums)(int64_t K, int64_t N, const op_t* const* rows, int64_t off, acc_t* sums);
  // The relu activation of a hidden row and its gradient, rounded to op_t: a[j] =
  // relu(h[j]), dp[j] = h[j] <= 0 ? 0 : dh[j], j < n; a NaN h passes (as torch.relu and
  // threshold_backward).
  void (*relu_and_grad)(const float* h, const acc_t* dh, op_t* a, op_t* dp, int64_t n);
  // Operands narrower than acc_t only (bf16): rows() takes its B panel packed, K x N (row
  // stride ld) into panel_elems(K, N) values. Wider panels are used as they are (null).
  int64_t (*panel_elems)(int64_t K, int64_t N) = nullptr;
  void (*pack_panel)(int64_t K, int64_t N, const op_t* src, int64_t ld, op_t* dst) = nullptr;
  // The same for src^T, src N x K (row stride K): the panel packed without a transpose pass.
  void (*pack_panel_t)(int64_t K, int64_t N, const op_t* src, op_t* dst) = nullptr;
  // rows() with C rounded to bfloat16 (raw bits) as each block is written: no fp32 copy of
  // C goes through memory. Null where callers use rows() into scratch, then narrow_bf16.
  void (*rows_narrow)(int64_t M, int64_t N, int64_t K, const op_t* const* a, const op_t* b,
                      int64_t ldb, uint16_t* const* c, const acc_t* bias) = nullptr;
  // cols() rounded to bfloat16 as each block leaves the kernel, without accumulation: c[i *
  // ldc + j] = C[i][j], or, transposed, c[j * ldc + i] = C[i][j]. Null where callers use
  // cols() into scratch, then transpose and narrow_bf16.
  void (*cols_narrow)(int64_t M, int64_t N, int64_t K, const op_t* const* ak, int64_t aoff,
                      const op_t* const* bk, int64_t boff, uint16_t* c, int64_t ldc,
                      bool transposed) = nullptr;
};

// ---------------------------------------------------------------- portable versions
template <typename acc_t>
void rows_generic(int64_t M, int64_t N, int64_t K, const acc_t* const* a, const acc_t* b,
                  int64_t ldb, acc_t* const* c, const acc_t* bias) {
  for (int64_t i = 0; i < M; ++i) {
    acc_t* ci = c[i];
    for (int64_t j = 0; j < N; ++j) ci[j] = bias ? bias[j] : acc_t(0);
    for (int64_t k = 0; k < K; ++k) {
      const acc_t av = a[i][k];
      const acc_t* bk = b + k * ldb;
      for (int64_t j = 0; j < N; ++j) ci[j] += av * bk[j];
    }
  }
}

template <typename acc_t>
void cols_generic(int64_t M, int64_t N, int64_t K, const acc_t* const* ak, int64_t aoff,
                  const acc_t* const* bk, int64_t boff, acc_t* c, int64_t ldc, bool accumulate) {
  if (!accumulate)
    for (int64_t i = 0; i < M; ++i) std::fill(c + i * ldc, c + i * ldc + N, acc_t(0));
  for (int64_t k = 0; k < K; ++k) {
    const acc_t* a = ak[k] + aoff;
    const acc_t* b = bk[k] + boff;
    for (int64_t i = 0; i < M; ++i) {
      const acc_t av = a[i];
      acc_t* ci = c + i * ldc;
      for (int64_t j = 0; j < N; ++j) ci[j] += av * b[j];
    }
  }
}

template <typename acc_t>
void transpose_generic(int64_t rows, int64_t cols, const acc_t* src, int64_t ld_src, acc_t* dst,
                       int64_t ld_dst) {
  constexpr int64_t kB = 16;  // cache blocking
  for (int64_t i0 = 0; i0 < rows; i0 += kB)
    for (int64_t j0 = 0; j0 < cols; j0 += kB)
      for (int64_t i = i0; i < std::min(rows, i0 + kB); ++i)
        for (int64_t j = j0; j < std::min(cols, j0 + kB); ++j)
          dst[j * ld_dst + i] = src[i * ld_src + j];
}

template <typename acc_t>
void widen_bf16_generic(const uint16_t* src, acc_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<acc_t>(float(c10::BFloat16(src[i], c10::BFloat16::from_bits())));
}

template <typename acc_t>
void narrow_bf16_generic(const acc_t* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = c10::BFloat16(static_cast<float>(src[i])).x;
}

template <typename op_t, typename acc_t>
void col_sums_generic(int64_t K, int64_t N, const op_t* const* rows, int64_t off, acc_t* sums) {
  for (int64_t k = 0; k < K; ++k)
    for (int64_t j = 0; j < N; ++j) sums[j] += static_cast<acc_t>(rows[k][off + j]);
}

template <typename acc_t>
void relu_and_grad_generic(const float* h, const acc_t* dh, acc_t* a, acc_t* dp, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const acc_t hj = h[j];
    a[j] = hj < acc_t(0) ? acc_t(0) : hj;
    dp[j] = hj <= acc_t(0) ? acc_t(0) : dh[j];
  }
}

template <typename acc_t>
GemmOps<acc_t> generic_ops() {
  return {&rows_generic<acc_t>,        &cols_generic<acc_t>,
          &transpose_generic<acc_t>,   &widen_bf16_generic<acc_t>,
          &narrow_bf16_generic<acc_t>, &col_sums_generic<acc_t, acc_t>,
          &relu_and_grad_generic<acc_t>};
}

// ---------------------------------------------------------------- AVX-512 (fp32)
// Rows of accumulators per micro-tile for NV vectors per row: ~24 accumulators, at most
// 8 A-row pointers (they live in general-purpose registers).
constexpr int mr_for(int nv) { return nv >= 4 ? 6 : 8; }

PHA_AVX512 inline __m512 load_cols(const float* p, int v, int nv, __mmask16 last) {
  return v == nv - 1 ? _mm512_maskz_loadu_ps(last, p + 16 * v) : _mm512_loadu_ps(p + 16 * v);
}

PHA_AVX512 inline void store_cols(float* p, int v, int nv, __mmask16 last, __m512 x) {
  if (v == nv - 1)
    _mm512_mask_storeu_ps(p + 16 * v, last, x);
  else
    _mm512_storeu_ps(p + 16 * v, x);
}

// The accumulators are spelled out as named variables (acc<i><v>) rather than an array:
// GCC keeps a 24 x __m512 array in memory (too big to scalarise) and would store every
// accumulator on each k step. Entries outside MR x NV are dead code and vanish.
#define PHA_EACH_V(F) F(0) F(1) F(2) F(3)
#define PHA_EACH_I(F) F(0) F(1) F(2) F(3) F(4) F(5) F(6) F(7)
#define PHA_EACH_IV(F)                                                                      \
  F(0, 0) F(0, 1) F(0, 2) F(0, 3) F(1, 0) F(1, 1) F(1, 2) F(1, 3) F(2, 0) F(2, 1) F(2, 2)   \
  F(2, 3) F(3, 0) F(3, 1) F(3, 2) F(3, 3) F(4, 0) F(4, 1) F(4, 2) F(4, 3) F(5, 0) F(5, 1)   \
  F(5, 2) F(5, 3) F(6, 0) F(6, 1) F(6, 2) F(6, 3) F(7, 0) F(7, 1) F(7, 2) F(7, 3)
#define PHA_LOAD_B(v) \
  const __m512 b##v = v < NV ? load_cols(bp, v, NV, last) : _mm512_setzero_ps();
#define PHA_FMA(i, v)                    \
  if constexpr (i < MR && v < NV)        \
    acc##i##v = _mm512_fmadd_ps(_mm512_set1_ps(A_AT(i)), b##v, acc##i##v);

// The accumulators acc<i><v> of a rows tile, starting at the bias columns (bias, last and
// NV in scope) or zero.
#define PHA_INIT_FROM_BIAS(v)               \
  __m512 init##v = _mm512_setzero_ps();     \
  if constexpr (v < NV)                     \
    if (bias) init##v = load_cols(bias, v, NV, last);
#define PHA_DECL_FROM_INIT(i, v) __m512 acc##i##v = init##v;
#define PHA_ROWS_ACCUMULATORS PHA_EACH_V(PHA_INIT_FROM_BIAS) PHA_EACH_IV(PHA_DECL_FROM_INIT)

template <int MR, int NV>
PHA_AVX512 void rows_tile(int64_t K, const float* const* a, const float* b, int64_t ldb,
                          float* const* c, int64_t coff, const float* bias, __mmask16 last) {
  static_assert(MR <= 8 && NV <= 4, "micro-tile larger than the named accumulators");
  PHA_ROWS_ACCUMULATORS
#define PHA_ROW(i) const float* a##i = i < MR ? a[i] : nullptr;
  PHA_EACH_I(PHA_ROW)
#undef PHA_ROW
  for (int64_t k = 0; k < K; ++k) {
    const float* bp = b + k * ldb;
    PHA_EACH_V(PHA_LOAD_B)
#define A_AT(i) a##i[k]
    PHA_EACH_IV(PHA_FMA)
#undef A_AT
  }
#define PHA_STORE(i, v) \
  if constexpr (i < MR && v < NV) store_cols(c[i] + coff, v, NV, last, acc##i##v);
  PHA_EACH_IV(PHA_STORE)
#undef PHA_STORE
}

template <int MR, int NV>
PHA_AVX512 void cols_tile(int64_t K, const float* const* ak, int64_t aoff, const float* const* bk,
                          int64_t boff, float* c, int64_t ldc, bool accumulate, __mmask16 last) {
  static_assert(MR <= 8 && NV <= 4, "micro-tile larger than the named accumulators");
#define PHA_DECL(i, v)                                        \
  __m512 acc##i##v = _mm512_setzero_ps();                     \
  if constexpr (i < MR && v < NV)                             \
    if (accumulate) acc##i##v = load_cols(c + i * ldc, v, NV, last);
  PHA_EACH_IV(PHA_DECL)
#undef PHA_DECL
  for (int64_t k = 0; k < K; ++k) {
    const float* ap = ak[k] + aoff;
    const float* bp = bk[k] + boff;
    PHA_EACH_V(PHA_LOAD_B)
#define A_AT(i) ap[i]
    PHA_EACH_IV(PHA_FMA)
#undef A_AT
  }
#define PHA_STORE(i, v) \
  if constexpr (i < MR && v < NV) store_cols(c + i * ldc, v, NV, last, acc##i##v);
  PHA_EACH_IV(PHA_STORE)
#undef PHA_STORE
}

// Calls Tile<mr, NV> for a runtime mr in [1, MR] (row tails of a matrix).
template <int NV, int MR = mr_for(NV)>
PHA_AVX512 void rows_dispatch(int mr, int64_t K, const float* const* a, const float* b,
                              int64_t ldb, float* const* c, int64_t coff, const float* bias,
                              __mmask16 last) {
  if constexpr (MR >= 1) {
    if (mr == MR) return rows_tile<MR, NV>(K, a, b, ldb, c, coff, bias, last);
    rows_dispatch<NV, MR - 1>(mr, K, a, b, ldb, c, coff, bias, last);
  }
}

template <int NV, int MR = mr_for(NV)>
PHA_AVX512 void cols_dispatch(int mr, int64_t K, const float* const* ak, int64_t aoff,
                              const float* const* bk, int64_t boff, float* c, int64_t ldc,
                              bool accumulate, __mmask16 last) {
  if constexpr (MR >= 1) {
    if (mr == MR) return cols_tile<MR, NV>(K, ak, aoff, bk, boff, c, ldc, accumulate, last);
    cols_dispatch<NV, MR - 1>(mr, K, ak, aoff, bk, boff, c, ldc, accumulate, last);
  }
}

inline __mmask16 tail_mask(int64_t n) {  // lanes used by the last of ceil(n/16) vectors
  const int64_t rem = n % 16;
  return rem == 0 ? __mmask16(0xFFFF) : __mmask16((1u << rem) - 1);
}

PHA_AVX512 inline void rows_avx512(int64_t M, int64_t N, int64_t K, const float* const* a,
                                   const float* b, int64_t ldb, float* const* c,
                                   const float* bias) {
  // Column panels outer (the B panel stays in L1 while the row tiles stream past it).
  for (int64_t n0 = 0; n0 < N; n0 += 64) {
    const int64_t n = std::min<int64_t>(64, N - n0);
    const int nv = int((n + 15) / 16);
    const __mmask16 last = tail_mask(n);
    const float* bias_n = bias ? bias + n0 : nullptr;
    const int mr_max = mr_for(nv);
    for (int64_t m0 = 0; m0 < M; m0 += mr_max) {
      const int mr = int(std::min<int64_t>(mr_max, M - m0));
      switch (nv) {
        case 1: rows_dispatch<1>(mr, K, a + m0, b + n0, ldb, c + m0, n0, bias_n, last); break;
        case 2: rows_dispatch<2>(mr, K, a + m0, b + n0, ldb, c + m0, n0, bias_n, last); break;
        case 3: rows_dispatch<3>(mr, K, a + m0, b + n0, ldb, c + m0, n0, bias_n, last); break;
        default: rows_dispatch<4>(mr, K, a + m0, b + n0, ldb, c + m0, n0, bias_n, last);
      }
    }
  }
}

PHA_AVX512 inline void cols_avx512(int64_t M, int64_t N, int64_t K, const float* const* ak,
                                   int64_t aoff, const float* const* bk, int64_t boff, float* c,
                                   int64_t ldc, bool accumulate) {
  for (int64_t n0 = 0; n0 < N; n0 += 64) {
    const int64_t n = std::min<int64_t>(64, N - n0);
    const int nv = int((n + 15) / 16);
    const __mmask16 last = tail_mask(n);
    const int mr_max = mr_for(nv);
    for (int64_t m0 = 0; m0 < M; m0 += mr_max) {
      const int mr = int(std::min<int64_t>(mr_max, M - m0));
      float* cm = c + m0 * ldc + n0;
      const int64_t am = aoff + m0, bn = boff + n0;
      switch (nv) {
        case 1: cols_dispatch<1>(mr, K, ak, am, bk, bn, cm, ldc, accumulate, last); break;
        case 2: cols_dispatch<2>(mr, K, ak, am, bk, bn, cm, ldc, accumulate, last); break;
        case 3: cols_dispatch<3>(mr, K, ak, am, bk, bn, cm, ldc, accumulate, last); break;
        default: cols_dispatch<4>(mr, K, ak, am, bk, bn, cm, ldc, accumulate, last);
      }
    }
  }
}

// 16x16 fp32 block transpose in registers (unpack, then 128-bit lane shuffles).
PHA_AVX512 inline void transpose16x16(const float* src, int64_t ld_src, float* dst,
                                      int64_t ld_dst) {
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * ld_src);
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  // r[4q + s] now holds column s + 4 * lane-quarter of rows 4q..4q+3, per 128-bit lane.
  for (int h = 0; h < 2; ++h)
    for (int s = 0; s < 4; ++s) {
      t[8 * h + s] = _mm512_shuffle_f32x4(r[8 * h + s], r[8 * h + 4 + s], 0x88);
      t[8 * h + 4 + s] = _mm512_shuffle_f32x4(r[8 * h + s], r[8 * h + 4 + s], 0xDD);
    }
  for (int s = 0; s < 8; ++s) {
    r[s] = _mm512_shuffle_f32x4(t[s], t[8 + s], 0x88);
    r[8 + s] = _mm512_shuffle_f32x4(t[s], t[8 + s], 0xDD);
  }
  for (int i = 0; i < 16; ++i) _mm512_storeu_ps(dst + i * ld_dst, r[i]);
}

PHA_AVX512 inline void transpose_avx512(int64_t rows, int64_t cols, const float* src,
                                        int64_t ld_src, float* dst, int64_t ld_dst) {
  const int64_t rows16 = rows - rows % 16, cols16 = cols - cols % 16;
  for (int64_t i = 0; i < rows16; i += 16)
    for (int64_t j = 0; j < cols16; j += 16)
      transpose16x16(src + i * ld_src + j, ld_src, dst + j * ld_dst + i, ld_dst);
  for (int64_t i = 0; i < rows; ++i)  // edges
    for (int64_t j = (i < rows16 ? cols16 : 0); j < cols; ++j) dst[j * ld_dst + i] = src[i * ld_src + j];
}

PHA_AVX512 inline void widen_bf16_avx512(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
    const __m512i bits = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, src + i));
    _mm512_mask_storeu_ps(dst + i, m, _mm512_castsi512_ps(_mm512_slli_epi32(bits, 16)));
  }
}

// 16 floats to bfloat16 bits, rounded to nearest even in integer arithmetic (no
// AVX512_BF16 needed; denormals kept); NaN -> quiet NaN.
PHA_AVX512 inline __m256i narrow16_bf16(__m512 v) {
  const __m512i bits = _mm512_castps_si512(v);
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  const __m512i rounding = _mm512_add_epi32(_mm512_set1_epi32(0x7FFF), odd);
  __m512i r = _mm512_srli_epi32(_mm512_add_epi32(bits, rounding), 16);
  r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_set1_epi32(0x7FC0));
  return _mm512_cvtepi32_epi16(r);
}

PHA_AVX512 inline void narrow_bf16_avx512(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
    _mm256_mask_storeu_epi16(dst + i, m, narrow16_bf16(_mm512_maskz_loadu_ps(m, src + i)));
  }
}

// col_sums for fp32 or bf16 rows, 64 columns (four accumulators) at a time.
template <typename op_t>
PHA_AVX512 inline __m512 load_as_fp32(const op_t* p, __mmask16 m) {
  if constexpr (std::is_same_v<op_t, float>) {
    return _mm512_maskz_loadu_ps(m, p);
  } else {
    const __m512i bits = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(bits, 16));
  }
}

template <typename op_t>
PHA_AVX512 void col_sums_avx512(int64_t K, int64_t N, const op_t* const* rows, int64_t off,
                                float* sums) {
  for (int64_t j0 = 0; j0 < N; j0 += 64) {
    __mmask16 m[4];
    __m512 acc[4];
    for (int v = 0; v < 4; ++v) {
      const int64_t n = std::min<int64_t>(16, std::max<int64_t>(0, N - j0 - 16 * v));
      m[v] = n == 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1);
      acc[v] = _mm512_maskz_loadu_ps(m[v], sums + j0 + 16 * v);
    }
    for (int64_t k = 0; k < K; ++k) {
      const op_t* row = rows[k] + off + j0;
      for (int v = 0; v < 4; ++v) acc[v] = _mm512_add_ps(acc[v], load_as_fp32(row + 16 * v, m[v]));
    }
    for (int v = 0; v < 4; ++v) _mm512_mask_storeu_ps(sums + j0 + 16 * v, m[v], acc[v]);
  }
}

// 16 floats (the first `m` lanes) stored as op_t: fp32, or bfloat16 bits rounded as
// c10::BFloat16 rounds.
template <typename op_t>
PHA_AVX512 inline void store_as(op_t* p, __mmask16 m, __m512 v) {
  if constexpr (std::is_same_v<op_t, float>)
    _mm512_mask_storeu_ps(p, m, v);
  else
    _mm256_mask_storeu_epi16(p, m, narrow16_bf16(v));
}

template <typename op_t>
PHA_AVX512 void relu_and_grad_avx512(const float* h, const float* dh, op_t* a, op_t* dp,
                                     int64_t n) {
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = n - j >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - j)) - 1);
    const __m512 hv = _mm512_maskz_loadu_ps(m, h + j);
    const __m512 gv = _mm512_maskz_loadu_ps(m, dh + j);
    // Ordered comparisons: false for a NaN h, which then passes.
    store_as(a + j, m, _mm512_mask_mov_ps(hv, _mm512_cmp_ps_mask(hv, zero, _CMP_LT_OQ), zero));
    store_as(dp + j, m, _mm512_mask_mov_ps(gv, _mm512_cmp_ps_mask(hv, zero, _CMP_LE_OQ), zero));
  }
}

inline GemmOps<float> avx512_ops() {
  return {&rows_avx512,        &cols_avx512,           &transpose_avx512, &widen_bf16_avx512,
          &narrow_bf16_avx512, &col_sums_avx512<float>, &relu_and_grad_avx512<float>};
}

}  // namespace pha_cpu

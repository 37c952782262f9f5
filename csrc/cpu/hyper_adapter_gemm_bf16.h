// bf16 GEMM blocks of the fused hyper-adapter on AVX512_BF16 (PHA_CPU_ISA=avx512_bf16).
//
// vdpbf16ps multiplies pairs of bf16 and adds both products to one fp32 lane: lane j of
// C += A[k] * B[k][j] + A[k+1] * B[k+1][j]. The operands stay bf16 (half the bytes of
// widened fp32, no conversion pass) and accumulation is fp32; products are exact, inputs
// and outputs that are denormal are flushed to zero (the instruction's rule).
//   rows: B is a weight panel packed once per weight set as pairs of k rows
//         (pack_pairs_bf16), A a row of bf16 whose (k, k+1) pair is one 32-bit broadcast.
//   cols: both operands are token rows; each pair of rows of B is interleaved in registers
//         (unpacklo/hi_epi16), which permutes the columns within a 32-column group; the
//         accumulators are put back in column order once, at the store.
// Same MR x NV register blocking (named accumulators) as the fp32 kernels.
#pragma once

#include <c10/util/BFloat16.h>
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "hyper_adapter_gemm.h"

namespace pha_cpu {

#define PHA_AVX512_BF16 \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma")))

using bf16 = c10::BFloat16;

// dst[(k / 2) * ldd + 2j + k % 2] = row(k)[j] for k < K, j < N, and 0 for K <= k < kp or
// N <= j < np (padding; kp even, np >= N): pair rows 0 .. kp / 2 - 1, each 2 np values.
// Rows are interleaved 32 columns at a time.
template <typename RowAt>
PHA_AVX512_BF16 inline void pack_pairs_rows(int64_t K, int64_t N, const RowAt& row, int64_t kp,
                                            int64_t np, bf16* dst, int64_t ldd) {
  __m512i lo_idx, hi_idx;  // (r0[j], r1[j]) for j = 0..15, then j = 16..31
  {
    alignas(64) int16_t lo[32], hi[32];
    for (int j = 0; j < 16; ++j) {
      lo[2 * j] = int16_t(j), lo[2 * j + 1] = int16_t(32 + j);
      hi[2 * j] = int16_t(16 + j), hi[2 * j + 1] = int16_t(48 + j);
    }
    lo_idx = _mm512_load_si512(lo);
    hi_idx = _mm512_load_si512(hi);
  }
  auto mask = [](int64_t n) {  // the first n of 32 16-bit lanes
    return n >= 32 ? ~__mmask32(0) : n <= 0 ? __mmask32(0) : __mmask32((1u << n) - 1);
  };
  for (int64_t k = 0; k < kp; k += 2) {
    const bf16* r0 = k < K ? row(k) : nullptr;
    const bf16* r1 = k + 1 < K ? row(k + 1) : nullptr;
    bf16* out = dst + (k / 2) * ldd;
    for (int64_t j = 0; j < np; j += 32) {
      const __mmask32 m = mask(N - j);
      const __m512i a = r0 ? _mm512_maskz_loadu_epi16(m, r0 + j) : _mm512_setzero_si512();
      const __m512i b = r1 ? _mm512_maskz_loadu_epi16(m, r1 + j) : _mm512_setzero_si512();
      const int64_t n = std::min<int64_t>(32, np - j);
      _mm512_mask_storeu_epi16(out + 2 * j, mask(2 * n), _mm512_permutex2var_epi16(a, lo_idx, b));
      _mm512_mask_storeu_epi16(out + 2 * j + 32, mask(2 * n - 32),
                               _mm512_permutex2var_epi16(a, hi_idx, b));
    }
  }
}

// The K x N panel src (row stride ld) packed by pairs of rows, 2 * ceil(K / 2) * N values
// (an odd K's last pair is padded with zeros): the B operand of rows_bf16.
inline int64_t pairs_panel_elems(int64_t K, int64_t N) { return 2 * ((K + 1) / 2) * N; }

PHA_AVX512_BF16 inline void pack_pairs_bf16(int64_t K, int64_t N, const bf16* src, int64_t ld,
                                            bf16* dst) {
  pack_pairs_rows(K, N, [&](int64_t k) { return src + k * ld; }, K + K % 2, N, dst, 2 * N);
}

// The panel of a transposed matrix: B = src^T with src N x K (row stride K), laid out as
// pack_pairs_rows lays out B (kp, np, ldd as there). A pair (src[j][k], src[j][k + 1]) is
// one 32-bit unit of src's row j, so for an even K this is a transpose of 32-bit units.
PHA_AVX512_BF16 inline void pack_pairs_transposed(int64_t K, int64_t N, const bf16* src,
                                                  int64_t kp, int64_t np, bf16* dst,
                                                  int64_t ldd) {
  const int64_t pairs = (K + 1) / 2;
  if (K % 2 == 0) {
    transpose_avx512(N, pairs, reinterpret_cast<const float*>(src), pairs,
                     reinterpret_cast<float*>(dst), ldd / 2);
  } else {
    for (int64_t kk = 0; kk < pairs; ++kk)
      for (int64_t j = 0; j < N; ++j) {
        const int64_t k = 2 * kk;
        dst[kk * ldd + 2 * j] = src[j * K + k];
        dst[kk * ldd + 2 * j + 1] = k + 1 < K ? src[j * K + k + 1] : bf16(0.0f);
      }
  }
  for (int64_t kk = 0; kk < kp / 2; ++kk) {  // zero padding
    const int64_t from = kk < pairs ? 2 * N : 0;
    std::fill(dst + kk * ldd + from, dst + kk * ldd + 2 * np, bf16(0.0f));
  }
}

PHA_AVX512_BF16 inline void pack_pairs_bf16_transposed(int64_t K, int64_t N, const bf16* src,
                                                       bf16* dst) {
  pack_pairs_transposed(K, N, src, K + K % 2, N, dst, 2 * N);
}

PHA_AVX512_BF16 inline __m512bh as_bh(__m512i v) { return reinterpret_cast<__m512bh&>(v); }

// The 32 bits at p (a pair of bf16) in every lane: a broadcast from memory (load port), not
// through a general register (which would take the dot product's port).
PHA_AVX512_BF16 inline __m512i broadcast_pair(const void* p) {
  return _mm512_broadcastd_epi32(_mm_loadu_si32(p));
}

#define PHA_DP(i, v)               \
  if constexpr (i < MR && v < NV)  \
    acc##i##v = _mm512_dpbf16_ps(acc##i##v, as_bh(A_AT(i)), b##v);

// C rows c[i][coff + 0:16NV] = bias + sum_k a[i][k] * B[k][0:16NV], B packed by pairs.
template <int MR, int NV>
PHA_AVX512_BF16 void rows_bf16_tile(int64_t K, const bf16* const* a, const bf16* bp, int64_t ldp,
                                    float* const* c, int64_t coff, const float* bias,
                                    __mmask16 last) {
  static_assert(MR <= 8 && NV <= 4, "micro-tile larger than the named accumulators");
  PHA_ROWS_ACCUMULATORS
#define PHA_ROW(i) const bf16* a##i = i < MR ? a[i] : nullptr;
  PHA_EACH_I(PHA_ROW)
#undef PHA_ROW
  // One pair of k rows (kk, kk + 1) of the panel, with A_AT(i) the pair of row i of A.
#define PHA_LOAD_BP(v)                                                                   \
  const __m512bh b##v = as_bh(v < NV ? (v == NV - 1 ? _mm512_maskz_loadu_epi32(last, bk + 16 * v) \
                                                    : _mm512_loadu_si512(bk + 16 * v))           \
                                     : _mm512_setzero_si512());
#define PHA_STEP(kk)                                                                   \
  {                                                                                    \
    const int32_t* bk = reinterpret_cast<const int32_t*>(bp + ((kk) / 2) * ldp);       \
    PHA_EACH_V(PHA_LOAD_BP)                                                            \
    PHA_EACH_IV(PHA_DP)                                                                \
  }
  const int64_t K2 = K & ~int64_t(1);
  for (int64_t k = 0; k < K2; k += 2) {
#define A_AT(i) broadcast_pair(a##i + k)
    PHA_STEP(k)
#undef A_AT
  }
  if (K2 < K) {  // odd K: the last row pairs with zero
#define A_AT(i) _mm512_set1_epi32(int(a##i[K2].x))
    PHA_STEP(K2)
#undef A_AT
  }
#undef PHA_STEP
#undef PHA_LOAD_BP
#define PHA_STORE(i, v) \
  if constexpr (i < MR && v < NV) store_cols(c[i] + coff, v, NV, last, acc##i##v);
  PHA_EACH_IV(PHA_STORE)
#undef PHA_STORE
}

template <int NV, int MR = mr_for(NV)>
PHA_AVX512_BF16 void rows_bf16_dispatch(int mr, int64_t K, const bf16* const* a, const bf16* bp,
                                        int64_t ldp, float* const* c, int64_t coff,
                                        const float* bias, __mmask16 last) {
  if constexpr (MR >= 1) {
    if (mr == MR) return rows_bf16_tile<MR, NV>(K, a, bp, ldp, c, coff, bias, last);
    rows_bf16_dispatch<NV, MR - 1>(mr, K, a, bp, ldp, c, coff, bias, last);
  }
}

// rows() of GemmOps: b is the K x N panel packed by pack_pairs_bf16 (pair rows of 2N).
PHA_AVX512_BF16 inline void rows_bf16(int64_t M, int64_t N, int64_t K, const bf16* const* a,
                                      const bf16* b, int64_t ldb, float* const* c,
                                      const float* bias) {
  const int64_t ldp = 2 * ldb;
  for (int64_t n0 = 0; n0 < N; n0 += 64) {
    const int64_t n = std::min<int64_t>(64, N - n0);
    const int nv = int((n + 15) / 16);
    const __mmask16 last = tail_mask(n);
    const float* bias_n = bias ? bias + n0 : nullptr;
    const bf16* bn = b + 2 * n0;
    const int mr_max = mr_for(nv);
    for (int64_t m0 = 0; m0 < M; m0 += mr_max) {
      const int mr = int(std::min<int64_t>(mr_max, M - m0));
      switch (nv) {
        case 1: rows_bf16_dispatch<1>(mr, K, a + m0, bn, ldp, c + m0, n0, bias_n, last); break;
        case 2: rows_bf16_dispatch<2>(mr, K, a + m0, bn, ldp, c + m0, n0, bias_n, last); break;
        case 3: rows_bf16_dispatch<3>(mr, K, a + m0, bn, ldp, c + m0, n0, bias_n, last); break;
        default: rows_bf16_dispatch<4>(mr, K, a + m0, bn, ldp, c + m0, n0, bias_n, last);
      }
    }
  }
}

// Column order <-> the order of unpacklo/hi_epi16 over a 32-column group: the lo vector
// holds columns 8q + 0..3 (q = lane / 4), the hi vector 8q + 4..7.
PHA_AVX512_BF16 inline void to_column_order(__m512 lo, __m512 hi, __m512& first, __m512& second) {
  const __m512i i0 = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
  const __m512i i1 = _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
  first = _mm512_permutex2var_ps(lo, i0, hi);
  second = _mm512_permutex2var_ps(lo, i1, hi);
}

PHA_AVX512_BF16 inline void from_column_order(__m512 first, __m512 second, __m512& lo, __m512& hi) {
  const __m512i i0 = _mm512_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27);
  const __m512i i1 = _mm512_setr_epi32(4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
  lo = _mm512_permutex2var_ps(first, i0, second);
  hi = _mm512_permutex2var_ps(first, i1, second);
}

// c[i * ldc + j] (+)= sum_k ak[k][aoff + i] * bk[k][boff + j] for i < MR, j < n <= 32 NG.
// Accumulator v holds group v / 2, lo (even v) or hi (odd v) columns.
template <int MR, int NG>
PHA_AVX512_BF16 void cols_bf16_tile(int64_t K, const bf16* const* ak, int64_t aoff,
                                    const bf16* const* bk, int64_t boff, float* c, int64_t ldc,
                                    bool accumulate, int64_t n) {
  static_assert(MR <= 8 && NG <= 2, "micro-tile larger than the named accumulators");
  constexpr int NV = 2 * NG;
  auto mask16 = [n](int q) {  // columns 16q .. 16q + 15, in column order
    const int64_t rem = n - 16 * q;
    return rem >= 16 ? __mmask16(0xFFFF) : rem <= 0 ? __mmask16(0) : __mmask16((1u << rem) - 1);
  };
  auto mask32 = [n](int g) {  // columns 32g .. 32g + 31
    const int64_t rem = n - 32 * g;
    return rem >= 32 ? ~__mmask32(0) : rem <= 0 ? __mmask32(0) : __mmask32((1u << rem) - 1);
  };
#define PHA_DECL(i, v) __m512 acc##i##v = _mm512_setzero_ps();
  PHA_EACH_IV(PHA_DECL)
#undef PHA_DECL
#define PHA_LOADC(i, g, lo, hi)                                                       \
  if constexpr (i < MR && g < NG) {                                                    \
    const float* ci = c + i * ldc + 32 * g;                                            \
    from_column_order(_mm512_maskz_loadu_ps(mask16(2 * g), ci),                       \
                      _mm512_maskz_loadu_ps(mask16(2 * g + 1), ci + 16), lo, hi);      \
  }
#define PHA_LOADC0(i) PHA_LOADC(i, 0, acc##i##0, acc##i##1)
#define PHA_LOADC1(i) PHA_LOADC(i, 1, acc##i##2, acc##i##3)
  if (accumulate) {
    PHA_EACH_I(PHA_LOADC0)
    PHA_EACH_I(PHA_LOADC1)
  }
#undef PHA_LOADC0
#undef PHA_LOADC1
#undef PHA_LOADC
  const __mmask32 g0 = mask32(0), g1 = mask32(1);
  for (int64_t k = 0; k < K; k += 2) {
    const bool both = k + 1 < K;
    const bf16* r0 = bk[k] + boff;
    const bf16* r1 = both ? bk[k + 1] + boff : nullptr;
    __m512i x0 = _mm512_maskz_loadu_epi16(g0, r0);
    __m512i x1 = both ? _mm512_maskz_loadu_epi16(g0, r1) : _mm512_setzero_si512();
    const __m512bh b0 = as_bh(_mm512_unpacklo_epi16(x0, x1));
    const __m512bh b1 = as_bh(_mm512_unpackhi_epi16(x0, x1));
    __m512bh b2 = b0, b3 = b1;
    if constexpr (NG > 1) {
      x0 = _mm512_maskz_loadu_epi16(g1, r0 + 32);
      x1 = both ? _mm512_maskz_loadu_epi16(g1, r1 + 32) : _mm512_setzero_si512();
      b2 = as_bh(_mm512_unpacklo_epi16(x0, x1));
      b3 = as_bh(_mm512_unpackhi_epi16(x0, x1));
    }
    // The (k, k + 1) pairs of A's MR rows as 32-bit lanes, broadcast from this buffer.
    const __mmask16 am = __mmask16((1u << MR) - 1);
    __m512i pairs_v = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(am, ak[k] + aoff));
    if (both) {
      const __m512i hi = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(am, ak[k + 1] + aoff));
      pairs_v = _mm512_or_si512(pairs_v, _mm512_slli_epi32(hi, 16));
    }
    alignas(64) int32_t pairs[16];
    _mm512_store_si512(pairs, pairs_v);
#define A_AT(i) broadcast_pair(pairs + i)
    PHA_EACH_IV(PHA_DP)
#undef A_AT
  }
#define PHA_STOREC(i, g, lo, hi)                                       \
  if constexpr (i < MR && g < NG) {                                     \
    __m512 first, second;                                               \
    to_column_order(lo, hi, first, second);                             \
    float* ci = c + i * ldc + 32 * g;                                   \
    _mm512_mask_storeu_ps(ci, mask16(2 * g), first);                    \
    _mm512_mask_storeu_ps(ci + 16, mask16(2 * g + 1), second);          \
  }
#define PHA_STOREC0(i) PHA_STOREC(i, 0, acc##i##0, acc##i##1)
#define PHA_STOREC1(i) PHA_STOREC(i, 1, acc##i##2, acc##i##3)
  PHA_EACH_I(PHA_STOREC0)
  PHA_EACH_I(PHA_STOREC1)
#undef PHA_STOREC0
#undef PHA_STOREC1
#undef PHA_STOREC
}

template <int NG, int MR = mr_for(2 * NG)>
PHA_AVX512_BF16 void cols_bf16_dispatch(int mr, int64_t K, const bf16* const* ak, int64_t aoff,
                                        const bf16* const* bk, int64_t boff, float* c,
                                        int64_t ldc, bool accumulate, int64_t n) {
  if constexpr (MR >= 1) {
    if (mr == MR) return cols_bf16_tile<MR, NG>(K, ak, aoff, bk, boff, c, ldc, accumulate, n);
    cols_bf16_dispatch<NG, MR - 1>(mr, K, ak, aoff, bk, boff, c, ldc, accumulate, n);
  }
}

// cols() of GemmOps on bf16 token rows.
PHA_AVX512_BF16 inline void cols_bf16(int64_t M, int64_t N, int64_t K, const bf16* const* ak,
                                      int64_t aoff, const bf16* const* bk, int64_t boff, float* c,
                                      int64_t ldc, bool accumulate) {
  for (int64_t n0 = 0; n0 < N; n0 += 64) {
    const int64_t n = std::min<int64_t>(64, N - n0);
    const int mr_max = mr_for(n > 32 ? 4 : 2);
    for (int64_t m0 = 0; m0 < M; m0 += mr_max) {
      const int mr = int(std::min<int64_t>(mr_max, M - m0));
      float* cm = c + m0 * ldc + n0;
      if (n > 32)
        cols_bf16_dispatch<2>(mr, K, ak, aoff + m0, bk, boff + n0, cm, ldc, accumulate, n);
      else
        cols_bf16_dispatch<1>(mr, K, ak, aoff + m0, bk, boff + n0, cm, ldc, accumulate, n);
    }
  }
}

#undef PHA_DP

inline GemmOps<bf16, float> avx512_bf16_ops() {
  return {&rows_bf16,          &cols_bf16,         &transpose_avx512, &widen_bf16_avx512,
          &narrow_bf16_avx512, &col_sums_avx512<bf16>, &relu_and_grad_avx512<bf16>,
          &pairs_panel_elems,  &pack_pairs_bf16,       &pack_pairs_bf16_transposed};
}

}  // namespace pha_cpu

// bf16 GEMM blocks of the fused hyper-adapter on AMX tiles (PHA_CPU_ISA=amx_bf16).
//
// tdpbf16ps multiplies a 16 x 32 bf16 tile A by a 32 x 16 bf16 tile B held as 16 rows of
// (k, k + 1) pairs (the layout pack_pairs_rows writes) and adds into a 16 x 16 fp32 tile
// C: products are exact, accumulation is fp32, denormal inputs and outputs are flushed.
// Every tile here is a full 16 rows x 64 bytes, so one tile configuration serves all
// calls: operands are packed into buffers padded with zeros to 16 rows / 16 columns and to
// 32 values of k (zeros add nothing, and no padding value can meet a NaN), and results are
// written back through a staging block where a tile would pass the edge of C.
// Registers: tmm0..3 a 2 x 2 block of C, tmm4..5 two A tiles, tmm6..7 two B tiles.
//
// Each rows()/cols() call loads the configuration (ldtilecfg) and releases the tiles at
// its end: the thread may run oneDNN's AMX kernels, with their own configurations, between
// two calls, and released tiles cost the OS nothing to save.
#pragma once

#include <c10/util/BFloat16.h>
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "hyper_adapter_gemm.h"
#include "hyper_adapter_gemm_bf16.h"

namespace pha_cpu {

#define PHA_AMX                                                                             \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma,amx-tile," \
                        "amx-bf16")))

constexpr int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// The ldtilecfg operand: palette 1, tiles 0..7 of 16 rows x 64 bytes. A global, so the
// compiler cannot drop the bytes the instruction reads (its asm names only the first 8).
struct alignas(64) TileConfig {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};
inline const TileConfig kFullTiles = {
    1, 0, {}, {64, 64, 64, 64, 64, 64, 64, 64}, {16, 16, 16, 16, 16, 16, 16, 16}};

// Grow-only per-thread buffers for the packed operands (no allocation once warm).
inline bf16* amx_buffer(int which, int64_t n) {
  thread_local std::vector<bf16> bufs[3];
  if (int64_t(bufs[which].size()) < n) bufs[which].resize(n);
  return bufs[which].data();
}

// C block (16 MT x 16 NT fp32) = Cinit + A (16 MT x kp bf16, row stride lda) x B (kp / 2
// pair rows of 2 x ldb / 2 values, row stride ldb); kp a multiple of 32. Cinit is zero when
// c_init is null; its row stride ld_init may be 0 (a bias row repeated).
template <int MT, int NT>
PHA_AMX void amx_block(const bf16* a, int64_t lda, const bf16* b, int64_t ldb, int64_t kp,
                       const float* c_init, int64_t ld_init, float* c, int64_t ldc) {
  static_assert(MT >= 1 && MT <= 2 && NT >= 1 && NT <= 2, "C is at most 2 x 2 tiles");
  const int64_t init_stride = ld_init * 4, c_stride = ldc * 4;
  if (c_init) {
    _tile_loadd(0, c_init, init_stride);
    if constexpr (NT > 1) _tile_loadd(1, c_init + 16, init_stride);
    if constexpr (MT > 1) _tile_loadd(2, c_init + 16 * ld_init, init_stride);
    if constexpr (MT > 1 && NT > 1) _tile_loadd(3, c_init + 16 * ld_init + 16, init_stride);
  } else {
    _tile_zero(0);
    if constexpr (NT > 1) _tile_zero(1);
    if constexpr (MT > 1) _tile_zero(2);
    if constexpr (MT > 1 && NT > 1) _tile_zero(3);
  }
  const int64_t a_stride = lda * 2, b_stride = ldb * 2;
  for (int64_t k = 0; k < kp; k += 32) {
    const bf16* bk = b + (k / 2) * ldb;
    _tile_loadd(4, a + k, a_stride);
    _tile_loadd(6, bk, b_stride);
    if constexpr (MT > 1) _tile_loadd(5, a + 16 * lda + k, a_stride);
    if constexpr (NT > 1) _tile_loadd(7, bk + 32, b_stride);
    _tile_dpbf16ps(0, 4, 6);
    if constexpr (NT > 1) _tile_dpbf16ps(1, 4, 7);
    if constexpr (MT > 1) _tile_dpbf16ps(2, 5, 6);
    if constexpr (MT > 1 && NT > 1) _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, c, c_stride);
  if constexpr (NT > 1) _tile_stored(1, c + 16, c_stride);
  if constexpr (MT > 1) _tile_stored(2, c + 16 * ldc, c_stride);
  if constexpr (MT > 1 && NT > 1) _tile_stored(3, c + 16 * ldc + 16, c_stride);
}

PHA_AMX inline void amx_block(int mt, int nt, const bf16* a, int64_t lda, const bf16* b,
                              int64_t ldb, int64_t kp, const float* c_init, int64_t ld_init,
                              float* c, int64_t ldc) {
  if (mt == 2 && nt == 2) return amx_block<2, 2>(a, lda, b, ldb, kp, c_init, ld_init, c, ldc);
  if (mt == 2) return amx_block<2, 1>(a, lda, b, ldb, kp, c_init, ld_init, c, ldc);
  if (nt == 2) return amx_block<1, 2>(a, lda, b, ldb, kp, c_init, ld_init, c, ldc);
  amx_block<1, 1>(a, lda, b, ldb, kp, c_init, ld_init, c, ldc);
}

// Packing wrote the operands with ordinary stores, which tileloadd's asm does not declare
// it reads: keep the compiler from moving them past the tile loads.
PHA_AMX inline void amx_begin() {
  __asm__ volatile("" ::: "memory");
  _tile_loadconfig(&kFullTiles);
}

// rows[i][coff + j] (+)= stage[i * 32 + j] (+ bias[j]), i < m, j < n <= 32; out_t float,
// or uint16_t for bfloat16 bits (rounded here; no accumulate).
template <typename out_t>
PHA_AMX inline void write_back(const float* stage, int64_t m, int64_t n, out_t* const* rows,
                               int64_t coff, const float* bias, bool accumulate) {
  const __mmask16 m0 = n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1);
  const __mmask16 m1 = n <= 16 ? __mmask16(0) : __mmask16((1u << (n - 16)) - 1);
  const __m512 b0 = bias ? _mm512_maskz_loadu_ps(m0, bias) : _mm512_setzero_ps();
  const __m512 b1 = bias ? _mm512_maskz_loadu_ps(m1, bias + 16) : _mm512_setzero_ps();
  for (int64_t i = 0; i < m; ++i) {
    out_t* out = rows[i] + coff;
    __m512 v0 = _mm512_add_ps(_mm512_load_ps(stage + 32 * i), b0);
    __m512 v1 = _mm512_add_ps(_mm512_load_ps(stage + 32 * i + 16), b1);
    if constexpr (std::is_same_v<out_t, float>) {
      if (accumulate) {
        v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, out));
        v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, out + 16));
      }
      _mm512_mask_storeu_ps(out, m0, v0);
      _mm512_mask_storeu_ps(out + 16, m1, v1);
    } else {
      _mm256_mask_storeu_epi16(out, m0, narrow16_bf16(v0));
      _mm256_mask_storeu_epi16(out + 16, m1, narrow16_bf16(v1));
    }
  }
}

// Rows with one stride (rows[i] = rows[0] + i * stride), or 0.
template <typename T>
int64_t common_stride(const T* const* rows, int64_t m) {
  if (m < 2) return 0;
  const int64_t stride = rows[1] - rows[0];
  for (int64_t i = 2; i < m; ++i)
    if (rows[i] - rows[0] != i * stride) return 0;
  return stride;
}

// C blocks of an mp x np product, 32 x 32 at a time; a block inside C's m x n goes straight
// to (from, when accumulating) C at c_full with row stride ldc_full, the others through
// `stage` to write_back(rows of C, bias, accumulate).
template <typename Direct, typename Edge>
PHA_AMX void amx_gemm(int64_t m, int64_t n, int64_t kp, const bf16* ap, int64_t lda,
                      const bf16* bp, int64_t ldb, const Direct& direct, const Edge& edge) {
  const int64_t mp = round_up(m, 16), np = round_up(n, 16);
  alignas(64) float stage[32 * 32];
  amx_begin();
  for (int64_t m0 = 0; m0 < mp; m0 += 32) {
    const int mt = int(std::min<int64_t>(2, (mp - m0) / 16));
    for (int64_t n0 = 0; n0 < np; n0 += 32) {
      const int nt = int(std::min<int64_t>(2, (np - n0) / 16));
      const bf16* a = ap + m0 * lda;
      const bf16* b = bp + 2 * n0;
      if (m0 + 16 * mt <= m && n0 + 16 * nt <= n && direct(m0, n0, mt, nt, a, lda, b, ldb, kp))
        continue;
      amx_block(mt, nt, a, lda, b, ldb, kp, nullptr, 0, stage, 32);
      edge(m0, n0, std::min<int64_t>(32, m - m0), std::min<int64_t>(32, n - n0), stage);
    }
  }
  _tile_release();
}

// rows() of GemmOps into fp32 or bf16 (uint16_t) rows of C: b is the K x N panel packed by
// pack_panel_amx.
template <typename out_t>
PHA_AMX void rows_amx_into(int64_t M, int64_t N, int64_t K, const bf16* const* a, const bf16* b,
                           out_t* const* c, const float* bias) {
  if (M == 0 || N == 0) return;
  const int64_t kp = round_up(K, 32), np = round_up(N, 16), mp = round_up(M, 16);
  // A in place when its rows are evenly spaced and need no padding, else packed.
  const bf16* ap = a[0];
  int64_t lda = common_stride(a, M);
  if (M % 16 != 0 || K != kp || lda < K) {
    bf16* packed = amx_buffer(0, mp * kp);
    const __mmask32 tail = K % 32 ? __mmask32((1u << (K % 32)) - 1) : ~__mmask32(0);
    for (int64_t i = 0; i < mp; ++i)
      for (int64_t k = 0; k < kp; k += 32) {
        const __mmask32 mk = i >= M ? __mmask32(0) : k + 32 <= K ? ~__mmask32(0) : tail;
        _mm512_storeu_si512(packed + i * kp + k, _mm512_maskz_loadu_epi16(mk, a[std::min(i, M - 1)] + k));
      }
    ap = packed;
    lda = kp;
  }
  const int64_t ldc = common_stride(c, M);
  auto direct = [&](int64_t m0, int64_t n0, int mt, int nt, const bf16* at, int64_t la,
                    const bf16* bt, int64_t lb, int64_t k) {
    // Tiles store fp32 only, and only to evenly spaced rows of C.
    if constexpr (std::is_same_v<out_t, float>) {
      if (ldc < N) return false;
      amx_block(mt, nt, at, la, bt, lb, k, bias ? bias + n0 : nullptr, 0, c[m0] + n0, ldc);
      return true;
    } else {
      return false;
    }
  };
  auto edge = [&](int64_t m0, int64_t n0, int64_t m, int64_t n, const float* stage) {
    write_back(stage, m, n, c + m0, n0, bias ? bias + n0 : nullptr, false);
  };
  amx_gemm(M, N, kp, ap, lda, b, 2 * np, direct, edge);
}

PHA_AMX inline void rows_amx(int64_t M, int64_t N, int64_t K, const bf16* const* a, const bf16* b,
                             int64_t /*ldb = N*/, float* const* c, const float* bias) {
  rows_amx_into(M, N, K, a, b, c, bias);
}

PHA_AMX inline void rows_amx_narrow(int64_t M, int64_t N, int64_t K, const bf16* const* a,
                                    const bf16* b, int64_t /*ldb = N*/, uint16_t* const* c,
                                    const float* bias) {
  rows_amx_into(M, N, K, a, b, c, bias);
}

// The operands of cols(): B packed by pairs of token rows, A^T as A by pairs transposed in
// 32-bit units (a pair of k is one unit). Returns kp; at and bp are amx_buffer 1 and 2.
PHA_AMX inline int64_t pack_cols_operands(int64_t M, int64_t N, int64_t K,
                                          const bf16* const* ak, int64_t aoff,
                                          const bf16* const* bk, int64_t boff, bf16*& at,
                                          bf16*& bp) {
  const int64_t kp = round_up(K, 32), np = round_up(N, 16), mp = round_up(M, 16);
  bf16* a_pairs = amx_buffer(0, kp * mp);
  at = amx_buffer(1, mp * kp);
  bp = amx_buffer(2, kp * np);
  pack_pairs_rows(K, M, [&](int64_t k) { return ak[k] + aoff; }, kp, mp, a_pairs, 2 * mp);
  transpose_avx512(kp / 2, mp, reinterpret_cast<const float*>(a_pairs), mp,
                   reinterpret_cast<float*>(at), kp / 2);
  pack_pairs_rows(K, N, [&](int64_t k) { return bk[k] + boff; }, kp, np, bp, 2 * np);
  return kp;
}

// cols() of GemmOps on bf16 token rows: C = A^T B.
PHA_AMX inline void cols_amx(int64_t M, int64_t N, int64_t K, const bf16* const* ak, int64_t aoff,
                             const bf16* const* bk, int64_t boff, float* c, int64_t ldc,
                             bool accumulate) {
  bf16 *at, *bp;
  const int64_t kp = pack_cols_operands(M, N, K, ak, aoff, bk, boff, at, bp);
  auto direct = [&](int64_t m0, int64_t n0, int mt, int nt, const bf16* a, int64_t la,
                    const bf16* b, int64_t lb, int64_t k) {
    float* cb = c + m0 * ldc + n0;
    amx_block(mt, nt, a, la, b, lb, k, accumulate ? cb : nullptr, ldc, cb, ldc);
    return true;
  };
  auto edge = [&](int64_t m0, int64_t n0, int64_t m, int64_t n, const float* stage) {
    float* rows[32];
    for (int64_t i = 0; i < m; ++i) rows[i] = c + (m0 + i) * ldc;
    write_back(stage, m, n, rows, n0, nullptr, accumulate);
  };
  amx_gemm(M, N, kp, at, kp, bp, 2 * round_up(N, 16), direct, edge);
}

// cols_narrow() of GemmOps: every 32 x 32 block of C goes through the staging block and is
// rounded to bf16 there; transposed, the block is first transposed in registers, so each
// row of C^T still gets 32 contiguous values.
PHA_AMX inline void cols_amx_narrow(int64_t M, int64_t N, int64_t K, const bf16* const* ak,
                                    int64_t aoff, const bf16* const* bk, int64_t boff,
                                    uint16_t* c, int64_t ldc, bool transposed) {
  bf16 *at, *bp;
  const int64_t kp = pack_cols_operands(M, N, K, ak, aoff, bk, boff, at, bp);
  auto direct = [](int64_t, int64_t, int, int, const bf16*, int64_t, const bf16*, int64_t,
                   int64_t) { return false; };
  auto edge = [&](int64_t m0, int64_t n0, int64_t m, int64_t n, const float* stage) {
    uint16_t* rows[32];
    if (!transposed) {
      for (int64_t i = 0; i < m; ++i) rows[i] = c + (m0 + i) * ldc;
      return write_back(stage, m, n, rows, n0, nullptr, false);
    }
    alignas(64) float stage_t[32 * 32];
    for (int bi = 0; bi < 32; bi += 16)
      for (int bj = 0; bj < 32; bj += 16)
        transpose16x16(stage + bi * 32 + bj, 32, stage_t + bj * 32 + bi, 32);
    for (int64_t j = 0; j < n; ++j) rows[j] = c + (n0 + j) * ldc;
    write_back(stage_t, n, m, rows, m0, nullptr, false);
  };
  amx_gemm(M, N, kp, at, kp, bp, 2 * round_up(N, 16), direct, edge);
}

// The K x N panel src (row stride ld) for rows_amx: pairs of rows, padded with zeros to 32
// values of k and 16 columns.
inline int64_t amx_panel_elems(int64_t K, int64_t N) { return round_up(K, 32) * round_up(N, 16); }

PHA_AVX512_BF16 inline void pack_panel_amx(int64_t K, int64_t N, const bf16* src, int64_t ld,
                                           bf16* dst) {
  const int64_t np = round_up(N, 16);
  pack_pairs_rows(K, N, [&](int64_t k) { return src + k * ld; }, round_up(K, 32), np, dst, 2 * np);
}

PHA_AVX512_BF16 inline void pack_panel_amx_transposed(int64_t K, int64_t N, const bf16* src,
                                                      bf16* dst) {
  const int64_t np = round_up(N, 16);
  pack_pairs_transposed(K, N, src, round_up(K, 32), np, dst, 2 * np);
}

inline GemmOps<bf16, float> amx_bf16_ops() {
  return {&rows_amx,           &cols_amx,        &transpose_avx512, &widen_bf16_avx512,
          &narrow_bf16_avx512, &col_sums_avx512<bf16>, &relu_and_grad_avx512<bf16>,
          &amx_panel_elems,    &pack_panel_amx,        &pack_panel_amx_transposed,
          &rows_amx_narrow,    &cols_amx_narrow};
}

}  // namespace pha_cpu

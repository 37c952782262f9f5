// Vector building blocks of the contrastive-loss kernels (csrc/cpu/contrastive.cpp).
//
// Written once with GCC vector extensions (64-byte vectors) and always inlined: the
// kernels are compiled twice, inside an AVX-512 function (per-function target attribute,
// chosen at run time) and inside a portable one, where the compiler lowers the same
// vectors to SSE. Nothing here is called out of line, so no code escapes its target.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

// 64-byte vectors never cross a call boundary: the ABI note does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

#define PHA_INLINE inline __attribute__((always_inline))

namespace pha_contrastive {

template <typename T>
struct Simd {
  static constexpr int kLanes = 64 / sizeof(T);
  typedef T V __attribute__((vector_size(64)));
};
template <typename T>
using Vec = typename Simd<T>::V;
typedef int32_t VecI32 __attribute__((vector_size(64)));

template <typename T>
PHA_INLINE Vec<T> load(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <typename T>
PHA_INLINE void store(T* p, Vec<T> v) {
  std::memcpy(p, &v, sizeof v);
}

// Lane 0 shuffled to every lane: one broadcast, which the compiler takes straight from
// memory. (`Vec<T>{} + x` adds a scalar +0 first, not an identity because of -0; a
// constructor of identical lanes, or an index pack, gets assembled lane by lane.)
template <typename T>
PHA_INLINE Vec<T> splat(T x) {
  const Vec<T> v = {x};
  if constexpr (Simd<T>::kLanes == 16) {
    return __builtin_shufflevector(v, v, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
  } else {
    static_assert(Simd<T>::kLanes == 8);
    return __builtin_shufflevector(v, v, 0, 0, 0, 0, 0, 0, 0, 0);
  }
}

template <typename T>
PHA_INLINE Vec<T> vmax(Vec<T> a, Vec<T> b) {
  return a > b ? a : b;
}

template <typename T>
PHA_INLINE T hmax(Vec<T> v) {
  T m = v[0];
  for (int i = 1; i < Simd<T>::kLanes; ++i) m = v[i] > m ? v[i] : m;
  return m;
}

template <typename T>
PHA_INLINE T hsum(Vec<T> v) {
  T s = 0;
  for (int i = 0; i < Simd<T>::kLanes; ++i) s += v[i];
  return s;
}

// exp for fp32 lanes (Cephes polynomial, ~1 ulp): exp(-inf) = 0, NaN stays NaN, and
// arguments are <= 0 in every use here (scores minus a running max or a log-sum-exp).
PHA_INLINE Vec<float> vexp(Vec<float> x) {
  const Vec<float> lo = splat(-87.3f), hi = splat(88.0f);
  Vec<float> xc = x > hi ? hi : x;
  xc = xc < lo ? lo : xc;
  const Vec<float> magic = splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  Vec<float> n = (xc * 1.44269504088896341f + magic) - magic;
  Vec<float> r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  Vec<float> p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  Vec<float> y = p * (r * r) + r + 1.0f;
  VecI32 bits = (__builtin_convertvector(n, VecI32) + 127) << 23;
  y = y * (Vec<float>)bits;  // a vector cast reinterprets the bits
  return x < lo ? splat(0.0f) : y;
}

// fp64 exists for gradcheck: exactness over speed.
PHA_INLINE Vec<double> vexp(Vec<double> x) {
  for (int i = 0; i < Simd<double>::kLanes; ++i) x[i] = std::exp(x[i]);
  return x;
}

// S[r][c] = scale * sum_d A[r][d] * BT[d][c] for one block of MR rows and NV vectors of columns.
template <typename T, int MR, int NV>
PHA_INLINE void scores_block(
    T* S, int64_t lds, const T* A, int64_t lda, const T* BT, int64_t ldb, int64_t depth, T scale) {
  constexpr int L = Simd<T>::kLanes;
  Vec<T> acc[MR][NV] = {};
  for (int64_t d = 0; d < depth; ++d) {
    Vec<T> b[NV];
    for (int v = 0; v < NV; ++v) b[v] = load(BT + d * ldb + v * L);
    for (int r = 0; r < MR; ++r) {
      const Vec<T> a = splat(A[r * lda + d]);
      for (int v = 0; v < NV; ++v) acc[r][v] += a * b[v];
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) store(S + r * lds + v * L, acc[r][v] * scale);
}

constexpr int64_t kScoreRows = 8;  // rows per scores block: callers pad row counts to this

// S = scale * A @ BT for `rows` (a multiple of kScoreRows) rows of A [., depth] and `cols`
// (a multiple of the lane count) columns of BT [depth, .] (the transposed right operand).
template <typename T>
PHA_INLINE void scores_tile(T* S, int64_t lds, const T* A, int64_t lda, const T* BT, int64_t ldb,
                            int64_t rows, int64_t cols, int64_t depth, T scale) {
  constexpr int L = Simd<T>::kLanes;
  for (int64_t r = 0; r < rows; r += kScoreRows) {
    int64_t c = 0;
    for (; c + 2 * L <= cols; c += 2 * L)
      scores_block<T, kScoreRows, 2>(S + r * lds + c, lds, A + r * lda, lda, BT + c, ldb, depth, scale);
    if (c < cols)
      scores_block<T, kScoreRows, 1>(S + r * lds + c, lds, A + r * lda, lda, BT + c, ldb, depth, scale);
  }
}

// out[r][:] += sum_j M[r * mrs + j * mcs] * X[j][:] for MR rows and NV vectors of features.
template <typename T, int MR, int NV>
PHA_INLINE void accumulate_block(T* out, int64_t ldo, const T* M, int64_t mrs, int64_t mcs,
                                 const T* X, int64_t ldx, int64_t n) {
  constexpr int L = Simd<T>::kLanes;
  Vec<T> acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = load(out + r * ldo + v * L);
  for (int64_t j = 0; j < n; ++j) {
    Vec<T> x[NV];
    for (int v = 0; v < NV; ++v) x[v] = load(X + j * ldx + v * L);
    for (int r = 0; r < MR; ++r) {
      const Vec<T> m = splat(M[r * mrs + j * mcs]);
      for (int v = 0; v < NV; ++v) acc[r][v] += m * x[v];
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) store(out + r * ldo + v * L, acc[r][v]);
}

constexpr int64_t kAccumulateRows = 4;  // rows per accumulate block: callers pad to this

template <typename T, int MR>
PHA_INLINE void accumulate_rows(T* out, int64_t ldo, const T* M, int64_t mrs, int64_t mcs,
                                const T* X, int64_t ldx, int64_t n, int64_t depth) {
  constexpr int L = Simd<T>::kLanes;
  int64_t d = 0;
  for (; d + 4 * L <= depth; d += 4 * L)
    accumulate_block<T, MR, 4>(out + d, ldo, M, mrs, mcs, X + d, ldx, n);
  switch ((depth - d) / L) {
    case 3: accumulate_block<T, MR, 3>(out + d, ldo, M, mrs, mcs, X + d, ldx, n); break;
    case 2: accumulate_block<T, MR, 2>(out + d, ldo, M, mrs, mcs, X + d, ldx, n); break;
    case 1: accumulate_block<T, MR, 1>(out + d, ldo, M, mrs, mcs, X + d, ldx, n); break;
    default: break;
  }
}

// out[r][:depth] += sum_{j < n} M(r, j) X[j][:depth] with M(r, j) = M[r * mrs + j * mcs];
// rows is a multiple of kAccumulateRows, depth a multiple of the lane count.
template <typename T>
PHA_INLINE void accumulate_tile(T* out, int64_t ldo, const T* M, int64_t mrs, int64_t mcs,
                                const T* X, int64_t ldx, int64_t rows, int64_t n, int64_t depth) {
  for (int64_t r = 0; r < rows; r += kAccumulateRows)
    accumulate_rows<T, kAccumulateRows>(out + r * ldo, ldo, M + r * mrs, mrs, mcs, X, ldx, n, depth);
}

// One step of an online log-sum-exp over a tile row s[0:cols) (cols a multiple of the lane
// count; masked entries are -inf): (m, l) track the running max and sum of exp(s - m).
template <typename T>
PHA_INLINE void online_lse(const T* s, int64_t cols, T& m, T& l) {
  constexpr int L = Simd<T>::kLanes;
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  Vec<T> mx = splat(kNegInf);
  for (int64_t c = 0; c < cols; c += L) mx = vmax<T>(mx, load(s + c));
  const T tile_max = hmax<T>(mx);
  if (tile_max == kNegInf) return;  // everything masked: nothing to add
  const T m_new = tile_max > m ? tile_max : m;
  const Vec<T> shift = splat(m_new);
  Vec<T> sum = {};
  for (int64_t c = 0; c < cols; c += L) sum += vexp(load(s + c) - shift);
  l = l * std::exp(m - m_new) + hsum<T>(sum);
  m = m_new;
}

}  // namespace pha_contrastive

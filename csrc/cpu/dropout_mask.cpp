// Dropout keep masks on CPU for pha::dropout_mask (pha/compile.py): element i is kept when
// a 32-bit uniform integer u_i >= threshold = round(p * 2^32).
//
// The uniforms are SplitMix64's outputs for the seed: draw c is mix(seed + (c + 1) * gamma)
// (Steele, Lea, Flood 2014; passes BigCrush), and it gives u_{2c} (low half) and u_{2c+1}
// (high half). Every draw depends only on the seed and its index, so the mask is the same
// on every thread count and on both code paths (AVX-512: 8 draws per vector; portable C++).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>

#include "cpu_isa.h"

namespace pha_cpu {
namespace {

constexpr uint64_t kGamma = 0x9E3779B97F4A7C15ull;
constexpr int64_t kGrain = 1 << 16;  // elements per parallel task (a multiple of 16)

inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// keep[i] for i in [begin, end), begin even.
void keep_generic(uint64_t seed, uint32_t threshold, int64_t begin, int64_t end, bool* keep) {
  for (int64_t i = begin; i < end; i += 2) {
    const uint64_t z = mix64(seed + uint64_t(i / 2 + 1) * kGamma);
    keep[i] = uint32_t(z) >= threshold;
    if (i + 1 < end) keep[i + 1] = uint32_t(z >> 32) >= threshold;
  }
}

PHA_AVX512 inline __m512i mix64_x8(__m512i z) {
  z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 30)),
                         _mm512_set1_epi64(int64_t(0xBF58476D1CE4E5B9ull)));
  z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 27)),
                         _mm512_set1_epi64(int64_t(0x94D049BB133111EBull)));
  return _mm512_xor_si512(z, _mm512_srli_epi64(z, 31));
}

// 16 elements (8 draws) per step; the tail on the portable code.
PHA_AVX512 void keep_avx512(uint64_t seed, uint32_t threshold, int64_t begin, int64_t end,
                                 bool* keep) {
  const __m512i lane = _mm512_setr_epi64(1, 2, 3, 4, 5, 6, 7, 8);
  const __m512i gamma = _mm512_set1_epi64(int64_t(kGamma));
  const __m512i thr = _mm512_set1_epi32(int32_t(threshold));
  const __m128i ones = _mm_set1_epi8(1);
  int64_t i = begin;
  for (; i + 16 <= end; i += 16) {
    const __m512i counter = _mm512_add_epi64(_mm512_set1_epi64(i / 2), lane);
    const __m512i z = mix64_x8(_mm512_add_epi64(_mm512_set1_epi64(int64_t(seed)),
                                                _mm512_mullo_epi64(counter, gamma)));
    const __mmask16 kept = _mm512_cmpge_epu32_mask(z, thr);  // 32-bit lane 2k: low half of draw k
    _mm_storeu_si128(reinterpret_cast<__m128i*>(keep + i), _mm_maskz_mov_epi8(kept, ones));
  }
  keep_generic(seed, threshold, i, end, keep);
}

at::Tensor dropout_mask(const at::Tensor& x, double p, int64_t seed) {
  TORCH_CHECK(x.device().is_cpu(), "dropout_mask (C++ CPU): x must be a CPU tensor, got ",
              x.device());
  TORCH_CHECK_VALUE(p > 0.0 && p < 1.0, "dropout_mask: p must lie in (0, 1), got ", p);
  at::Tensor keep = at::empty(x.sizes(), x.options().dtype(at::kBool));
  const int64_t n = keep.numel();
  const uint32_t threshold = uint32_t(std::llround(p * 4294967296.0));
  const bool vector = active_isa() != Isa::Generic;
  bool* out = keep.data_ptr<bool>();
  at::parallel_for(0, (n + kGrain - 1) / kGrain, 1, [&](int64_t b0, int64_t b1) {
    const int64_t begin = b0 * kGrain, end = std::min(n, b1 * kGrain);
    if (vector)
      keep_avx512(uint64_t(seed), threshold, begin, end, out);
    else
      keep_generic(uint64_t(seed), threshold, begin, end, out);
  });
  return keep;
}

}  // namespace
}  // namespace pha_cpu

TORCH_LIBRARY_IMPL(pha_C, CPU, m) { m.impl("dropout_mask", &pha_cpu::dropout_mask); }

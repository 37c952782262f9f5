// C++ CPU kernels of PHA's contrastive losses (pha.ops.supcon_loss, pha.ops.prototype_loss),
// registered as torch.ops.pha_C.{supcon,prototype}_{forward,backward} on the launcher
// contract of pha/ops/contrastive.py.
//
// The B x B (or B x K) score matrix is never materialised. Rows are processed in tiles of
// kRowTile, in parallel; each row tile walks column tiles of kColTile scores held in a
// per-thread buffer:
//   forward   an online log-sum-exp per row (diagonal / excluded positive masked). The
//             supcon positive term needs no mask: sum_{p in P(i)} zn_p = C[y_i] - zn_i with
//             C the per-class sums of the normalised rows.
//   backward  recomputes each score tile. supcon's score matrix is symmetric, so the row
//             and the column contribution of a tile (dL/ds_ij and dL/ds_ji) are both
//             formed in the row tile that owns i: one pass, no atomics. prototype_loss sums
//             the prototypes' gradient per fixed chunk of row tiles, then over chunks in
//             order (deterministic whatever the thread count).
// All arithmetic is fp32 (fp64 for fp64 inputs) on zero-padded normalised copies of z and
// the prototypes, so that bf16/fp16 inputs cost one conversion pass.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <numeric>
#include <vector>

#include "contrastive_simd.h"
#include "cpu_isa.h"

namespace pha_contrastive {
namespace {

constexpr int64_t kRowTile = 64;   // rows per parallel task (a multiple of kScoreRows)
constexpr int64_t kColTile = 256;  // scores per row per tile: 64 x 256 fp32 = 64 KiB
constexpr int64_t kMaxChunks = 4;  // prototype gradient partial sums (memory: chunks x K x D)
constexpr double kNormEps = 1e-12;  // F.normalize's eps

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// The fp32 kernels run their AVX-512 build on the avx512 and avx512_bf16 paths (cpu_isa.h).
bool use_avx512() { return pha_cpu::active_isa() != pha_cpu::Isa::Generic; }

// Each kernel is compiled twice from the same always-inline code: for AVX-512 and for the
// baseline x86-64 (where GCC lowers the 64-byte vectors through memory: correct, but far
// slower); fp64 (gradcheck) only runs the portable build. Dispatched at run time.
#define PHA_ISA_VARIANTS(name, impl, params, args)           \
  template <typename T>                                      \
  PHA_AVX512 void name##_avx512 params { impl args; }        \
  template <typename T>                                      \
  void name##_portable params { impl args; }                 \
  template <typename T>                                      \
  void name##_run params {                                   \
    if constexpr (std::is_same_v<T, float>) {                \
      if (use_avx512()) return name##_avx512 args;           \
    }                                                        \
    name##_portable args;                                    \
  }

// L2-normalised rows of a [n, d] tensor in the accumulation type, zero padded to dp features
// (a multiple of the lane count) and to a multiple of kScoreRows rows, plus (if asked) the
// transpose [dp, ld_cols] (columns padded to the lane count) for score tiles.
template <typename T>
struct Normalized {
  int64_t n = 0, d = 0, dp = 0, ld_cols = 0;
  std::vector<T> rows, cols, norm;  // norm: ||x_i|| (unclamped)
  bool finite = true;

  Normalized(const at::Tensor& x, bool transposed) : n(x.size(0)), d(x.size(1)) {
    constexpr int64_t L = Simd<T>::kLanes;
    dp = round_up(std::max<int64_t>(d, 1), L);
    ld_cols = round_up(std::max<int64_t>(n, 1), L);
    rows.assign(round_up(std::max<int64_t>(n, 1), kScoreRows) * dp, T(0));
    if (transposed) cols.assign(dp * ld_cols, T(0));
    norm.assign(n, T(0));
    std::vector<char> row_finite(n, 1);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "pha_normalize", [&] {
      const scalar_t* src = x.const_data_ptr<scalar_t>();
      at::parallel_for(0, n, 2048, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          double sq = 0;  // double: no overflow for any finite fp32 row
          for (int64_t k = 0; k < d; ++k) {
            const double v = static_cast<double>(src[i * d + k]);
            sq += v * v;
          }
          row_finite[i] = std::isfinite(sq);
          norm[i] = static_cast<T>(std::sqrt(sq));
          // Divide like F.normalize (a multiplication by the inverse is off by an ulp, which
          // the normalisation's backward, g - zn (zn . g), turns into absolute error).
          const T denom = std::max(norm[i], static_cast<T>(kNormEps));
          for (int64_t k = 0; k < d; ++k) {
            const T v = static_cast<T>(src[i * d + k]) / denom;
            rows[i * dp + k] = v;
            if (transposed) cols[k * ld_cols + i] = v;
          }
        }
      });
    });
    finite = std::all_of(row_finite.begin(), row_finite.end(), [](char f) { return f != 0; });
  }

  const T* row(int64_t i) const { return rows.data() + i * dp; }
};

// Gradient through F.normalize for row i: g is dL/dzn_i (already scaled), out dL/dx_i.
template <typename T, typename scalar_t>
void normalize_backward_row(const Normalized<T>& x, int64_t i, const T* g, scalar_t* out) {
  const T* zn = x.row(i);
  const T norm = x.norm[i];
  if (norm >= static_cast<T>(kNormEps)) {
    T dot = 0;
    for (int64_t k = 0; k < x.d; ++k) dot += zn[k] * g[k];
    for (int64_t k = 0; k < x.d; ++k) out[k] = static_cast<scalar_t>((g[k] - zn[k] * dot) / norm);
  } else {  // the norm is clamped to eps: a plain division
    for (int64_t k = 0; k < x.d; ++k) out[k] = static_cast<scalar_t>(g[k] / static_cast<T>(kNormEps));
  }
}

// grad (dtype of x) = normalize-backward of scale * g (rows of ld dp).
template <typename T>
at::Tensor input_gradient(const Normalized<T>& x, const std::vector<T>& g, T scale, const at::Tensor& like) {
  at::Tensor out = at::empty_like(like);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, like.scalar_type(), "pha_normalize_backward", [&] {
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, x.n, 2048, [&](int64_t begin, int64_t end) {
      std::vector<T> scaled(x.dp);
      for (int64_t i = begin; i < end; ++i) {
        for (int64_t k = 0; k < x.dp; ++k) scaled[k] = scale * g[i * x.dp + k];
        normalize_backward_row(x, i, scaled.data(), dst + i * x.d);
      }
    });
  });
  return out;
}

template <typename T>
T dot(const T* a, const T* b, int64_t n) {
  T s = 0;
  for (int64_t k = 0; k < n; ++k) s += a[k] * b[k];
  return s;
}

// Compact class ids (labels may be large and sparse) and each row's number of positives.
struct Classes {
  std::vector<int64_t> id, n_pos;
  int64_t count = 0;

  explicit Classes(const at::Tensor& labels) {
    const int64_t n = labels.size(0);
    const int64_t* y = labels.const_data_ptr<int64_t>();
    std::vector<int64_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return y[a] < y[b]; });
    id.assign(n, 0);
    n_pos.assign(n, 0);
    std::vector<int64_t> size;
    for (int64_t k = 0; k < n; ++k) {
      if (k == 0 || y[order[k]] != y[order[k - 1]]) size.push_back(0);
      id[order[k]] = static_cast<int64_t>(size.size()) - 1;
      ++size.back();
    }
    count = static_cast<int64_t>(size.size());
    for (int64_t i = 0; i < n; ++i) n_pos[i] = size[id[i]] - 1;
  }
};

// ---------------------------------------------------------------------------------------
// supcon
template <typename T>
struct SupconProblem {
  const Normalized<T>& z;
  const Classes& classes;
  std::vector<T> class_sum;  // [classes, dp]: C[c] = sum of the normalised rows of class c
  T inv_tau;

  SupconProblem(const Normalized<T>& z_, const Classes& classes_, double temperature)
      : z(z_), classes(classes_), class_sum(classes_.count * z_.dp, T(0)), inv_tau(T(1.0 / temperature)) {
    for (int64_t i = 0; i < z.n; ++i) {
      T* c = class_sum.data() + classes.id[i] * z.dp;
      for (int64_t k = 0; k < z.dp; ++k) c[k] += z.row(i)[k];
    }
  }

  // sum over P(i) of s_ip = zn_i . (C[y_i] - zn_i) / tau
  T positive_sum(int64_t i) const {
    const T* c = class_sum.data() + classes.id[i] * z.dp;
    const T* zi = z.row(i);
    T s = 0;
    for (int64_t k = 0; k < z.dp; ++k) s += zi[k] * (c[k] - zi[k]);
    return s * inv_tau;
  }
};

// Score tile S[r][c] = s_{i0+r, j0+c} for the row tile at i0 and the column tile at j0;
// returns the number of valid columns (the padded ones are computed from zero columns).
template <typename T>
PHA_INLINE int64_t supcon_scores(const SupconProblem<T>& p, T* S, int64_t i0, int64_t rows, int64_t j0) {
  const Normalized<T>& z = p.z;
  const int64_t cols = std::min(kColTile, z.n - j0);
  scores_tile(S, kColTile, z.row(i0), z.dp, z.cols.data() + j0, z.ld_cols, round_up(rows, kScoreRows),
              round_up(cols, Simd<T>::kLanes), z.dp, p.inv_tau);
  return cols;
}

template <typename T>
PHA_INLINE void supcon_forward_tiles(const SupconProblem<T>& p, T* lse, int64_t t0, int64_t t1) {
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  const int64_t n = p.z.n;
  std::vector<T> S(kRowTile * kColTile);
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t i0 = t * kRowTile, rows = std::min(kRowTile, n - i0);
    T m[kRowTile], l[kRowTile];
    std::fill(m, m + rows, kNegInf);
    std::fill(l, l + rows, T(0));
    for (int64_t j0 = 0; j0 < n; j0 += kColTile) {
      const int64_t cols = supcon_scores(p, S.data(), i0, rows, j0);
      const int64_t cols_p = round_up(cols, Simd<T>::kLanes);
      for (int64_t r = 0; r < rows; ++r) {
        T* s = S.data() + r * kColTile;
        std::fill(s + cols, s + cols_p, kNegInf);
        const int64_t diag = i0 + r - j0;
        if (diag >= 0 && diag < cols) s[diag] = kNegInf;
        online_lse(s, cols_p, m[r], l[r]);
      }
    }
    for (int64_t r = 0; r < rows; ++r) lse[i0 + r] = m[r] + std::log(l[r]);
  }
}

// dL/dzn for a row tile, unscaled by grad_loss / tau:
//   sum_j G_ij zn_j - 2 w_i (C[y_i] - zn_i),  G_ij = a_i p_ij + a_j p_ji (j != i),
//   p_ij = exp(s_ij - lse_i), a_i = [i has a positive] / M, w_i = a_i / |P(i)|.
// col_coef[j] = a_j and col_lse[j] = lse_j where a_j > 0 (+inf elsewhere, so that the
// column term vanishes without evaluating 0 * inf).
template <typename T>
PHA_INLINE void supcon_backward_tiles(const SupconProblem<T>& p, const T* lse, const T* col_coef,
                                      const T* col_lse, T* grad, int64_t t0, int64_t t1) {
  constexpr int64_t L = Simd<T>::kLanes;
  const Normalized<T>& z = p.z;
  const int64_t n = z.n;
  std::vector<T> S(kRowTile * kColTile);
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t i0 = t * kRowTile, rows = std::min(kRowTile, n - i0);
    const int64_t rows_p = round_up(rows, kScoreRows);
    for (int64_t j0 = 0; j0 < n; j0 += kColTile) {
      const int64_t cols = supcon_scores(p, S.data(), i0, rows, j0);
      const int64_t cols_p = round_up(cols, L);
      for (int64_t r = 0; r < rows_p; ++r) {
        T* s = S.data() + r * kColTile;
        const int64_t i = i0 + r;
        if (i >= n) {  // padding rows: no gradient (their accumulators are never read)
          std::fill(s, s + cols_p, T(0));
          continue;
        }
        const T a_i = col_coef[i];
        const Vec<T> lse_i = splat(lse[i]);
        for (int64_t c = 0; c < cols_p; c += L) {
          const Vec<T> sv = load(s + c);
          Vec<T> g = load(col_coef + j0 + c) * vexp(sv - load(col_lse + j0 + c));
          if (a_i != T(0)) g += a_i * vexp(sv - lse_i);
          store(s + c, g);
        }
        std::fill(s + cols, s + cols_p, T(0));
        const int64_t diag = i - j0;
        if (diag >= 0 && diag < cols) s[diag] = T(0);
      }
      accumulate_tile(grad + i0 * z.dp, z.dp, S.data(), kColTile, int64_t(1), z.row(j0), z.dp, rows_p, cols, z.dp);
    }
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = i0 + r;
      const int64_t n_pos = p.classes.n_pos[i];
      if (n_pos == 0) continue;
      const T w2 = T(2) * col_coef[i] / static_cast<T>(n_pos);
      const T* c = p.class_sum.data() + p.classes.id[i] * z.dp;
      const T* zi = z.row(i);
      T* gi = grad + i * z.dp;
      for (int64_t k = 0; k < z.dp; ++k) gi[k] -= w2 * (c[k] - zi[k]);
    }
  }
}

PHA_ISA_VARIANTS(supcon_forward, supcon_forward_tiles, (const SupconProblem<T>& p, T* lse, int64_t t0, int64_t t1),
                 (p, lse, t0, t1))
PHA_ISA_VARIANTS(supcon_backward, supcon_backward_tiles,
                 (const SupconProblem<T>& p, const T* lse, const T* cc, const T* cl, T* grad, int64_t t0, int64_t t1),
                 (p, lse, cc, cl, grad, t0, t1))

int64_t row_tiles(int64_t n) { return (n + kRowTile - 1) / kRowTile; }

// Row tiles per parallel task: waking a second thread costs microseconds on an idle machine
// and milliseconds on a busy one, so small problems (PHA's B = 128) run on one thread.
int64_t tile_grain(int64_t cols, int64_t depth) {
  constexpr int64_t kMinTaskMacs = int64_t(1) << 23;
  const int64_t tile_macs = std::max<int64_t>(kRowTile * cols * depth, 1);
  return std::max<int64_t>(1, kMinTaskMacs / tile_macs);
}

at::ScalarType accumulation_type(const at::Tensor& z) {
  return z.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

template <typename T>
T nan() {
  return std::numeric_limits<T>::quiet_NaN();
}

void check_inputs(const at::Tensor& z, const at::Tensor& labels, double temperature) {
  TORCH_CHECK(z.device().is_cpu() && labels.device().is_cpu(), "pha_cpu: tensors must be on the CPU");
  TORCH_CHECK(z.dim() == 2, "pha_cpu: z must have shape [B, D], got ", z.sizes());
  TORCH_CHECK(z.is_contiguous(), "pha_cpu: z must be contiguous");
  const auto dtype = z.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf || dtype == at::kDouble,
              "pha_cpu: z must be float32, bfloat16, float16 or float64, got ", dtype);
  TORCH_CHECK(labels.scalar_type() == at::kLong, "pha_cpu: labels must be int64, got ", labels.scalar_type());
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == z.size(0), "pha_cpu: labels must have shape [",
              z.size(0), "], got ", labels.sizes());
  TORCH_CHECK(labels.is_contiguous(), "pha_cpu: labels must be contiguous");
  TORCH_CHECK(std::isfinite(temperature) && temperature > 0, "pha_cpu: temperature must be > 0, got ",
              temperature);
}

void check_label_range(const at::Tensor& labels, int64_t upper) {
  const int64_t* y = labels.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < labels.size(0); ++i)
    TORCH_CHECK(y[i] >= 0 && y[i] < upper, "pha_cpu: label ", y[i], " at row ", i, " is outside [0, ", upper,
                ")");
}

void check_lse(const at::Tensor& lse, const at::Tensor& z) {
  TORCH_CHECK(lse.dim() == 1 && lse.size(0) == z.size(0) && lse.scalar_type() == accumulation_type(z) &&
                  lse.is_contiguous() && lse.device().is_cpu(),
              "pha_cpu: lse must be a contiguous [", z.size(0), "] ", accumulation_type(z),
              " CPU tensor from the forward, got ", lse.sizes(), " ", lse.scalar_type());
}

double grad_value(const at::Tensor& grad_loss) {
  TORCH_CHECK(grad_loss.numel() == 1, "pha_cpu: grad_loss must hold one value, got ", grad_loss.sizes());
  return grad_loss.item<double>();
}

std::tuple<at::Tensor, at::Tensor> supcon_forward(const at::Tensor& z, const at::Tensor& labels,
                                                  double temperature) {
  check_inputs(z, labels, temperature);
  check_label_range(labels, std::numeric_limits<int64_t>::max());
  const auto acc = accumulation_type(z);
  at::Tensor loss = at::zeros({}, z.options().dtype(acc));
  at::Tensor lse = at::empty({z.size(0)}, z.options().dtype(acc));
  AT_DISPATCH_FLOATING_TYPES(acc, "pha_supcon_forward", [&] {
    using T = scalar_t;
    const Normalized<T> zn(z, true);
    const Classes classes(labels);
    const SupconProblem<T> p(zn, classes, temperature);
    T* lse_ptr = lse.mutable_data_ptr<T>();
    at::parallel_for(0, row_tiles(zn.n), tile_grain(zn.n, zn.dp), [&](int64_t t0, int64_t t1) { supcon_forward_run(p, lse_ptr, t0, t1); });
    double sum = 0;
    int64_t rows_with_positive = 0;
    for (int64_t i = 0; i < zn.n; ++i) {
      const int64_t n_pos = classes.n_pos[i];
      if (n_pos == 0) continue;
      sum += static_cast<double>(lse_ptr[i]) - static_cast<double>(p.positive_sum(i)) / n_pos;
      ++rows_with_positive;
    }
    const double value = rows_with_positive ? sum / rows_with_positive : 0.0;
    loss.fill_(zn.finite ? value : nan<double>());
  });
  return {loss, lse};
}

at::Tensor supcon_backward(const at::Tensor& grad_loss, const at::Tensor& z, const at::Tensor& labels,
                           const at::Tensor& lse, double temperature) {
  check_inputs(z, labels, temperature);
  check_label_range(labels, std::numeric_limits<int64_t>::max());
  check_lse(lse, z);
  const double g = grad_value(grad_loss);
  at::Tensor grad_z;
  AT_DISPATCH_FLOATING_TYPES(accumulation_type(z), "pha_supcon_backward", [&] {
    using T = scalar_t;
    const Normalized<T> zn(z, true);
    const Classes classes(labels);
    const int64_t rows_with_positive =
        std::count_if(classes.n_pos.begin(), classes.n_pos.end(), [](int64_t k) { return k > 0; });
    if (rows_with_positive == 0) {
      grad_z = at::zeros_like(z);
      return;
    }
    const SupconProblem<T> p(zn, classes, temperature);
    const T* lse_ptr = lse.const_data_ptr<T>();
    std::vector<T> col_coef(zn.ld_cols, T(0)), col_lse(zn.ld_cols, std::numeric_limits<T>::infinity());
    for (int64_t i = 0; i < zn.n; ++i) {
      if (classes.n_pos[i] == 0) continue;
      col_coef[i] = T(1) / static_cast<T>(rows_with_positive);
      col_lse[i] = lse_ptr[i];
    }
    std::vector<T> grad(zn.rows.size(), T(0));
    at::parallel_for(0, row_tiles(zn.n), tile_grain(zn.n, zn.dp), [&](int64_t t0, int64_t t1) {
      supcon_backward_run(p, lse_ptr, col_coef.data(), col_lse.data(), grad.data(), t0, t1);
    });
    grad_z = input_gradient(zn, grad, static_cast<T>(g / temperature), z);
  });
  return grad_z;
}

// ---------------------------------------------------------------------------------------
// prototype_loss
template <typename T>
struct PrototypeProblem {
  const Normalized<T>& z;
  const Normalized<T>& protos;
  const int64_t* labels;
  T inv_tau;
  bool exclude_positive;

  // Score tile S[r][c] = s_{i0+r, k0+c} (prototype columns); returns the valid columns.
  PHA_INLINE int64_t scores(T* S, int64_t i0, int64_t rows, int64_t k0) const {
    const int64_t cols = std::min(kColTile, protos.n - k0);
    scores_tile(S, kColTile, z.row(i0), z.dp, protos.cols.data() + k0, protos.ld_cols, round_up(rows, kScoreRows),
                round_up(cols, Simd<T>::kLanes), z.dp, inv_tau);
    return cols;
  }

  // The column of row i's own prototype within the tile at k0, or -1.
  int64_t positive_column(int64_t i, int64_t k0, int64_t cols) const {
    const int64_t c = labels[i] - k0;
    return c >= 0 && c < cols ? c : -1;
  }
};

template <typename T>
PHA_INLINE void prototype_forward_tiles(const PrototypeProblem<T>& p, T* lse, int64_t t0, int64_t t1) {
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  const int64_t n = p.z.n, k = p.protos.n;
  std::vector<T> S(kRowTile * kColTile);
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t i0 = t * kRowTile, rows = std::min(kRowTile, n - i0);
    T m[kRowTile], l[kRowTile];
    std::fill(m, m + rows, kNegInf);
    std::fill(l, l + rows, T(0));
    for (int64_t k0 = 0; k0 < k; k0 += kColTile) {
      const int64_t cols = p.scores(S.data(), i0, rows, k0);
      const int64_t cols_p = round_up(cols, Simd<T>::kLanes);
      for (int64_t r = 0; r < rows; ++r) {
        T* s = S.data() + r * kColTile;
        std::fill(s + cols, s + cols_p, kNegInf);
        const int64_t pos = p.positive_column(i0 + r, k0, cols);
        if (p.exclude_positive && pos >= 0) s[pos] = kNegInf;
        online_lse(s, cols_p, m[r], l[r]);
      }
    }
    for (int64_t r = 0; r < rows; ++r) lse[i0 + r] = m[r] + std::log(l[r]);
  }
}

// For the row tiles [t0, t1): grad_z rows += G @ Pn and grad_protos += G^T @ Zn, unscaled by
// grad_loss / (B tau), with G_ik = p_ik - [k == y_i] and p_ik = exp(s_ik - lse_i) (0 for the
// excluded positive).
template <typename T>
PHA_INLINE void prototype_backward_tiles(const PrototypeProblem<T>& p, const T* lse, T* grad_z, T* grad_protos,
                                         int64_t t0, int64_t t1) {
  constexpr int64_t L = Simd<T>::kLanes;
  const Normalized<T>& z = p.z;
  const int64_t n = z.n, k = p.protos.n;
  std::vector<T> S(kRowTile * kColTile);
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t i0 = t * kRowTile, rows = std::min(kRowTile, n - i0);
    const int64_t rows_p = round_up(rows, kScoreRows);
    for (int64_t k0 = 0; k0 < k; k0 += kColTile) {
      const int64_t cols = p.scores(S.data(), i0, rows, k0);
      const int64_t cols_p = round_up(cols, L);
      for (int64_t r = 0; r < rows_p; ++r) {
        T* s = S.data() + r * kColTile;
        const int64_t i = i0 + r;
        if (i >= n) {  // padding rows must not reach the prototypes' gradient
          std::fill(s, s + cols_p, T(0));
          continue;
        }
        const Vec<T> lse_i = splat(lse[i]);
        for (int64_t c = 0; c < cols_p; c += L) store(s + c, vexp(load(s + c) - lse_i));
        std::fill(s + cols, s + cols_p, T(0));
        const int64_t pos = p.positive_column(i, k0, cols);
        if (pos >= 0) s[pos] = (p.exclude_positive ? T(0) : s[pos]) - T(1);
      }
      accumulate_tile(grad_z + i0 * z.dp, z.dp, S.data(), kColTile, int64_t(1), p.protos.row(k0), z.dp, rows_p,
                      cols, z.dp);
      accumulate_tile(grad_protos + k0 * z.dp, z.dp, S.data(), int64_t(1), kColTile, z.row(i0), z.dp,
                      round_up(cols, kAccumulateRows), rows_p, z.dp);
    }
  }
}

PHA_ISA_VARIANTS(prototype_forward, prototype_forward_tiles,
                 (const PrototypeProblem<T>& p, T* lse, int64_t t0, int64_t t1), (p, lse, t0, t1))
PHA_ISA_VARIANTS(prototype_backward, prototype_backward_tiles,
                 (const PrototypeProblem<T>& p, const T* lse, T* gz, T* gp, int64_t t0, int64_t t1),
                 (p, lse, gz, gp, t0, t1))

void check_prototypes(const at::Tensor& z, const at::Tensor& prototypes, const at::Tensor& labels) {
  TORCH_CHECK(prototypes.device().is_cpu(), "pha_cpu: prototypes must be on the CPU");
  TORCH_CHECK(prototypes.dim() == 2 && prototypes.size(1) == z.size(1), "pha_cpu: prototypes must have shape [K, ",
              z.size(1), "], got ", prototypes.sizes());
  TORCH_CHECK(prototypes.size(0) >= 1, "pha_cpu: prototypes must hold at least one row");
  TORCH_CHECK(prototypes.scalar_type() == z.scalar_type(), "pha_cpu: prototypes must have z's dtype ",
              z.scalar_type(), ", got ", prototypes.scalar_type());
  TORCH_CHECK(prototypes.is_contiguous(), "pha_cpu: prototypes must be contiguous");
  check_label_range(labels, prototypes.size(0));
}

// Nothing to average (no rows) or nothing to contrast (one prototype, positive excluded).
bool prototype_loss_is_zero(int64_t n, int64_t k, bool exclude_positive) {
  return n == 0 || (exclude_positive && k == 1);
}

std::tuple<at::Tensor, at::Tensor> prototype_forward(const at::Tensor& z, const at::Tensor& prototypes,
                                                     const at::Tensor& labels, double temperature,
                                                     bool exclude_positive) {
  check_inputs(z, labels, temperature);
  check_prototypes(z, prototypes, labels);
  const auto acc = accumulation_type(z);
  at::Tensor loss = at::zeros({}, z.options().dtype(acc));
  at::Tensor lse = at::empty({z.size(0)}, z.options().dtype(acc));
  AT_DISPATCH_FLOATING_TYPES(acc, "pha_prototype_forward", [&] {
    using T = scalar_t;
    const Normalized<T> zn(z, false), pn(prototypes, true);
    const int64_t* y = labels.const_data_ptr<int64_t>();
    const PrototypeProblem<T> p{zn, pn, y, T(1.0 / temperature), exclude_positive};
    T* lse_ptr = lse.mutable_data_ptr<T>();
    at::parallel_for(0, row_tiles(zn.n), tile_grain(pn.n, zn.dp),
                     [&](int64_t t0, int64_t t1) { prototype_forward_run(p, lse_ptr, t0, t1); });
    double value = 0;
    if (!prototype_loss_is_zero(zn.n, pn.n, exclude_positive)) {
      for (int64_t i = 0; i < zn.n; ++i)
        value += static_cast<double>(lse_ptr[i]) - static_cast<double>(dot(zn.row(i), pn.row(y[i]), zn.dp) * p.inv_tau);
      value /= zn.n;
    }
    loss.fill_(zn.finite && pn.finite ? value : nan<double>());
  });
  return {loss, lse};
}

std::tuple<at::Tensor, at::Tensor> prototype_backward(const at::Tensor& grad_loss, const at::Tensor& z,
                                                      const at::Tensor& prototypes, const at::Tensor& labels,
                                                      const at::Tensor& lse, double temperature,
                                                      bool exclude_positive) {
  check_inputs(z, labels, temperature);
  check_prototypes(z, prototypes, labels);
  check_lse(lse, z);
  const double g = grad_value(grad_loss);
  if (prototype_loss_is_zero(z.size(0), prototypes.size(0), exclude_positive))
    return {at::zeros_like(z), at::zeros_like(prototypes)};
  at::Tensor grad_z, grad_p;
  AT_DISPATCH_FLOATING_TYPES(accumulation_type(z), "pha_prototype_backward", [&] {
    using T = scalar_t;
    const Normalized<T> zn(z, false), pn(prototypes, true);
    const PrototypeProblem<T> p{zn, pn, labels.const_data_ptr<int64_t>(), T(1.0 / temperature), exclude_positive};
    const T* lse_ptr = lse.const_data_ptr<T>();
    // Row tiles are split into a fixed number of chunks (independent of the thread count),
    // each with its own prototype-gradient partial sum, reduced in chunk order below.
    const int64_t tiles = row_tiles(zn.n), chunks = std::min(tiles, kMaxChunks);
    const int64_t partial_size = round_up(pn.n, kColTile) * zn.dp;
    std::vector<T> gz(zn.rows.size(), T(0)), partials(chunks * partial_size, T(0));
    const int64_t chunk_grain = (tile_grain(pn.n, zn.dp) * chunks + tiles - 1) / tiles;
    at::parallel_for(0, chunks, chunk_grain, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c)
        prototype_backward_run(p, lse_ptr, gz.data(), partials.data() + c * partial_size, tiles * c / chunks,
                               tiles * (c + 1) / chunks);
    });
    std::vector<T> gp(pn.rows.size(), T(0));
    at::parallel_for(0, pn.n * zn.dp, 1 << 16, [&](int64_t begin, int64_t end) {
      for (int64_t c = 0; c < chunks; ++c)
        for (int64_t e = begin; e < end; ++e) gp[e] += partials[c * partial_size + e];
    });
    const T scale = static_cast<T>(g / (temperature * zn.n));
    grad_z = input_gradient(zn, gz, scale, z);
    grad_p = input_gradient(pn, gp, scale, prototypes);
  });
  return {grad_z, grad_p};
}

}  // namespace
}  // namespace pha_contrastive

TORCH_LIBRARY_IMPL(pha_C, CPU, m) {
  m.impl("supcon_forward", &pha_contrastive::supcon_forward);
  m.impl("supcon_backward", &pha_contrastive::supcon_backward);
  m.impl("prototype_forward", &pha_contrastive::prototype_forward);
  m.impl("prototype_backward", &pha_contrastive::prototype_backward);
}

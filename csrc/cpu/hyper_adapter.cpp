// Fused hyper-adapter on CPU: out = act(x @ w_down[g] + b_down[g]) @ w_up[g] + b_up[g].
//
// Instances are grouped by weight set (counting sort of `index`; without an index every
// instance is its own set), and each set's token rows form one "segment". Work is cut into
// token tiles of one segment, so a set's weights are read once per tile and never copied
// per instance; the r-wide hidden of a tile stays in a thread-local scratch (L1/L2).
//   forward, per tile:   H = X Wd + bd (-> saved fp32 hidden), A = act(H), out = A Wu + bu
//   backward phase 1:    per tile dH = G Wu^T, dP = dH * act'(H), grad_x = dP Wd^T,
//                        keeping A and dP (r-wide, sorted by segment) for phase 2
//   backward phase 2:    per (set, slice of d): grad_w_up = A^T G, grad_w_down = X^T dP and
//                        the bias sums. Each task owns its slice of one set's gradients,
//                        so the reduction over instances needs no atomics and no partials.
// Arithmetic is fp32 for fp32/bf16 (bf16 operands are widened in scratch), fp64 for fp64.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <string>
#include <type_traits>
#include <vector>

#include "hyper_adapter_gemm.h"

namespace pha_cpu {
namespace {

constexpr int64_t kTileRows = 64;     // token rows per tile (forward, backward phase 1)
constexpr int64_t kSliceCols = 64;    // columns of d per weight-gradient task
constexpr int64_t kChunkRows = 1024;  // token rows per weight-gradient pass

// ------------------------------------------------------------------ activations
enum class Act { Relu, Gelu, Silu, Identity };

Act parse_activation(const std::string& name) {
  if (name == "relu") return Act::Relu;
  if (name == "gelu") return Act::Gelu;
  if (name == "silu") return Act::Silu;
  if (name == "identity") return Act::Identity;
  TORCH_CHECK(false, "hyper_adapter: activation must be one of relu, gelu, silu, identity, got '",
              name, "'");
}

template <typename T>
inline T activate(T h, Act act) {
  switch (act) {
    case Act::Relu: return h > T(0) ? h : T(0);
    case Act::Gelu: {  // tanh form
      const T u = T(0.7978845608028654) * (h + T(0.044715) * h * h * h);
      return T(0.5) * h * (T(1) + std::tanh(u));
    }
    case Act::Silu: return h / (T(1) + std::exp(-h));
    default: return h;
  }
}

template <typename T>
inline T activate_grad(T h, Act act) {
  switch (act) {
    case Act::Relu: return h > T(0) ? T(1) : T(0);
    case Act::Gelu: {
      const T c = T(0.7978845608028654), a = T(0.044715);
      const T th = std::tanh(c * (h + a * h * h * h));
      return T(0.5) * (T(1) + th) + T(0.5) * h * (T(1) - th * th) * c * (T(1) + T(3) * a * h * h);
    }
    case Act::Silu: {
      const T s = T(1) / (T(1) + std::exp(-h));
      return s * (T(1) + h * (T(1) - s));
    }
    default: return T(1);
  }
}

// Whole rows with the activation fixed at compile time (relu/identity loops vectorise).
template <Act A, typename T>
void activate_row_as(T* h, int64_t n) {
  for (int64_t j = 0; j < n; ++j) h[j] = activate(h[j], A);
}

template <typename T>
void activate_row(T* h, int64_t n, Act act) {  // in place: h <- act(h)
  switch (act) {
    case Act::Relu: return activate_row_as<Act::Relu>(h, n);
    case Act::Gelu: return activate_row_as<Act::Gelu>(h, n);
    case Act::Silu: return activate_row_as<Act::Silu>(h, n);
    default: return;
  }
}

template <Act A, typename T>
void activate_and_grad_row_as(const float* h, const T* dh, T* a, T* dp, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const T hj = static_cast<T>(h[j]);
    a[j] = activate(hj, A);
    dp[j] = dh[j] * activate_grad(hj, A);
  }
}

template <typename T>  // a <- act(h), dp <- dh * act'(h)
void activate_and_grad_row(const float* h, const T* dh, T* a, T* dp, int64_t n, Act act) {
  switch (act) {
    case Act::Relu: return activate_and_grad_row_as<Act::Relu>(h, dh, a, dp, n);
    case Act::Gelu: return activate_and_grad_row_as<Act::Gelu>(h, dh, a, dp, n);
    case Act::Silu: return activate_and_grad_row_as<Act::Silu>(h, dh, a, dp, n);
    default: return activate_and_grad_row_as<Act::Identity>(h, dh, a, dp, n);
  }
}

// ------------------------------------------------------------------ scratch
// Grow-only thread-local buffers: no allocation per call once warm.
enum Slot {
  kX, kA, kWd, kWu, kBd, kBu, kCUp, kCDown, kGx, kXt, kGradUp, kGradDownT, kActBuf, kDpreBuf,
  kNumSlots
};

template <typename T>
T* scratch(Slot slot, size_t n) {
  thread_local std::array<std::vector<T>, kNumSlots> bufs;
  auto& v = bufs[slot];
  if (v.size() < n) v.resize(n);
  return v.data();
}

template <typename T>
std::vector<T>& pointer_table(int which, size_t n) {  // per-thread tables of row pointers
  thread_local std::array<std::vector<T>, 4> tables;
  auto& v = tables[which];
  if (v.size() < n) v.resize(n);
  return v;
}

template <typename dst_t, typename src_t>
inline void convert(const src_t* src, dst_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<dst_t>(static_cast<float>(src[i]));
}
template <>
inline void convert<double, double>(const double* src, double* dst, int64_t n) {
  std::copy(src, src + n, dst);
}

// Widening into / narrowing out of the accumulation type (vectorised for bf16 on AVX-512).
template <typename scalar_t, typename acc_t>
inline void to_acc(const GemmOps<acc_t>& ops, const scalar_t* src, acc_t* dst, int64_t n) {
  if constexpr (std::is_same_v<scalar_t, c10::BFloat16>)
    ops.widen_bf16(reinterpret_cast<const uint16_t*>(src), dst, n);
  else
    convert(src, dst, n);
}

template <typename scalar_t, typename acc_t>
inline void from_acc(const GemmOps<acc_t>& ops, const acc_t* src, scalar_t* dst, int64_t n) {
  if constexpr (std::is_same_v<scalar_t, c10::BFloat16>)
    ops.narrow_bf16(src, reinterpret_cast<uint16_t*>(dst), n);
  else
    convert(src, dst, n);
}

// ------------------------------------------------------------------ the plan
// Instances sorted by weight set; segment s covers positions [begin[s], begin[s+1]) of
// `order` and uses set `set[s]`. Its token rows q = 0..rows(s)-1 map to the original row
// order[begin[s] + q / T] * T + q % T and to the sorted row begin[s] * T + q.
struct Plan {
  int64_t B, T, d, r, G;
  std::vector<int64_t> order, begin, set;

  int64_t num_segments() const { return int64_t(set.size()); }
  int64_t rows(int64_t s) const { return (begin[s + 1] - begin[s]) * T; }
  int64_t sorted_row(int64_t s, int64_t q) const { return begin[s] * T + q; }
  int64_t original_row(int64_t s, int64_t q) const { return order[begin[s] + q / T] * T + q % T; }
};

Plan make_plan(int64_t B, int64_t T, int64_t d, int64_t r, int64_t G,
               const c10::optional<at::Tensor>& index) {
  Plan p{B, T, d, r, G, {}, {0}, {}};
  p.order.resize(B);
  if (!index.has_value()) {
    for (int64_t b = 0; b < B; ++b) {
      p.order[b] = b;
      p.begin.push_back(b + 1);
      p.set.push_back(b);
    }
    return p;
  }
  const int64_t* idx = index->data_ptr<int64_t>();
  std::vector<int64_t> count(G, 0);
  for (int64_t b = 0; b < B; ++b) ++count[idx[b]];
  std::vector<int64_t> next(G, 0);
  for (int64_t g = 0, pos = 0; g < G; ++g) {
    next[g] = pos;
    pos += count[g];
    if (count[g] > 0) {
      p.set.push_back(g);
      p.begin.push_back(pos);
    }
  }
  for (int64_t b = 0; b < B; ++b) p.order[next[idx[b]]++] = b;
  return p;
}

struct Tile {
  int64_t seg, q0, rows;
};

std::vector<Tile> make_tiles(const Plan& p) {
  std::vector<Tile> tiles;
  for (int64_t s = 0; s < p.num_segments(); ++s)
    for (int64_t q0 = 0; q0 < p.rows(s); q0 += kTileRows)
      tiles.push_back({s, q0, std::min(kTileRows, p.rows(s) - q0)});
  return tiles;
}

// Runs tasks [0, n), handing them out one at a time: a thread that is descheduled (a
// shared machine) or draws bigger tasks does not hold the others up. make_worker() runs
// once per thread and returns the callable (holding that thread's state) for one task.
template <typename MakeWorker>
void parallel_dynamic(int64_t n, const MakeWorker& make_worker) {
  std::atomic<int64_t> next{0};
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n));
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    auto worker = make_worker();
    for (int64_t t = next++; t < n; t = next++) worker(t);
  });
}

// A weight set in the accumulation type: the tensors themselves when the dtype matches,
// else a widened copy in scratch (made once per set per thread, not per tile).
template <typename scalar_t, typename acc_t>
const acc_t* as_acc(const GemmOps<acc_t>& ops, const scalar_t* src, int64_t n, Slot slot) {
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    return src;
  } else {
    acc_t* dst = scratch<acc_t>(slot, n);
    to_acc(ops, src, dst, n);
    return dst;
  }
}

// ------------------------------------------------------------------ forward
template <typename scalar_t, typename acc_t>
void forward_impl(const Plan& p, const scalar_t* x, const scalar_t* wd, const scalar_t* bd,
                  const scalar_t* wu, const scalar_t* bu, scalar_t* out, float* hidden, Act act,
                  const GemmOps<acc_t>& ops) {
  constexpr bool kSame = std::is_same_v<scalar_t, acc_t>;
  const int64_t d = p.d, r = p.r;
  const std::vector<Tile> tiles = make_tiles(p);
  parallel_dynamic(int64_t(tiles.size()), [&] {
    return [&, loaded = int64_t(-1), Wd = (const acc_t*)nullptr, Bd = (const acc_t*)nullptr,
            Wu = (const acc_t*)nullptr, Bu = (const acc_t*)nullptr](int64_t t) mutable {
      std::array<const acc_t*, kTileRows> in_rows;
      std::array<acc_t*, kTileRows> out_rows;
      std::array<int64_t, kTileRows> orig;
      const Tile& tile = tiles[t];
      const int64_t g = p.set[tile.seg], m = tile.rows;
      if (g != loaded) {
        Wd = as_acc<scalar_t, acc_t>(ops, wd + g * d * r, d * r, kWd);
        Bd = as_acc<scalar_t, acc_t>(ops, bd + g * r, r, kBd);
        Wu = as_acc<scalar_t, acc_t>(ops, wu + g * r * d, r * d, kWu);
        Bu = as_acc<scalar_t, acc_t>(ops, bu + g * d, d, kBu);
        loaded = g;
      }
      acc_t* xt = scratch<acc_t>(kX, kTileRows * d);  // widened x, later widened out
      acc_t* at = scratch<acc_t>(kA, kTileRows * r);  // H, then act(H)
      for (int64_t i = 0; i < m; ++i) {
        orig[i] = p.original_row(tile.seg, tile.q0 + i);
        if constexpr (kSame) {
          in_rows[i] = x + orig[i] * d;
        } else {
          to_acc(ops, x + orig[i] * d, xt + i * d, d);
          in_rows[i] = xt + i * d;
        }
        out_rows[i] = at + i * r;
      }
      ops.rows(m, r, d, in_rows.data(), Wd, r, out_rows.data(), Bd);
      for (int64_t i = 0; i < m; ++i) {
        acc_t* h = at + i * r;
        if (hidden) convert(h, hidden + orig[i] * r, r);
        activate_row(h, r, act);
        in_rows[i] = h;
        if constexpr (kSame)
          out_rows[i] = out + orig[i] * d;
        else
          out_rows[i] = xt + i * d;
      }
      ops.rows(m, d, r, in_rows.data(), Wu, d, out_rows.data(), Bu);
      if constexpr (!kSame)
        for (int64_t i = 0; i < m; ++i) from_acc(ops, xt + i * d, out + orig[i] * d, d);
    };
  });
}

// ------------------------------------------------------------------ backward
template <typename scalar_t, typename acc_t>
struct Backward {
  static constexpr bool kSame = std::is_same_v<scalar_t, acc_t>;
  const Plan& p;
  const scalar_t *gout, *x, *wd, *wu;
  const float* hidden;
  scalar_t *gx, *gwd, *gbd, *gwu, *gbu;
  Act act;
  const GemmOps<acc_t>& ops;
  acc_t* act_buf;   // act(H) of every token row, in segment order [B*T, r]
  acc_t* dpre_buf;  // dP, likewise

  // Phase 1 for one token tile: dH = G Wu^T, dP = dH * act'(H), grad_x = dP Wd^T.
  // `loaded` is the set whose transposed weights this thread holds in scratch.
  void tile(const Tile& tile, int64_t& loaded, std::array<int64_t, kTileRows>& orig) const {
    const int64_t d = p.d, r = p.r, g = p.set[tile.seg], m = tile.rows;
    acc_t* WuT = scratch<acc_t>(kWu, d * r);  // [d, r]
    acc_t* WdT = scratch<acc_t>(kWd, r * d);  // [r, d]
    if (g != loaded) {
      ops.transpose(r, d, as_acc<scalar_t, acc_t>(ops, wu + g * r * d, r * d, kCUp), d, WuT, r);
      ops.transpose(d, r, as_acc<scalar_t, acc_t>(ops, wd + g * d * r, d * r, kCUp), r, WdT, d);
      loaded = g;
    }
    std::array<const acc_t*, kTileRows> in_rows;
    std::array<acc_t*, kTileRows> out_rows;
    acc_t* gt = scratch<acc_t>(kX, kTileRows * d);   // widened grad_out
    acc_t* gxt = scratch<acc_t>(kGx, kTileRows * d);  // grad_x before narrowing
    acc_t* dh = scratch<acc_t>(kA, kTileRows * r);
    for (int64_t i = 0; i < m; ++i) {
      orig[i] = p.original_row(tile.seg, tile.q0 + i);
      if constexpr (kSame) {
        in_rows[i] = gout + orig[i] * d;
      } else {
        to_acc(ops, gout + orig[i] * d, gt + i * d, d);
        in_rows[i] = gt + i * d;
      }
      out_rows[i] = dh + i * r;
    }
    ops.rows(m, r, d, in_rows.data(), WuT, r, out_rows.data(), nullptr);
    const int64_t p0 = p.sorted_row(tile.seg, tile.q0);
    for (int64_t i = 0; i < m; ++i) {
      const float* h = hidden + orig[i] * r;
      acc_t* a = act_buf + (p0 + i) * r;
      acc_t* dp = dpre_buf + (p0 + i) * r;
      activate_and_grad_row(h, dh + i * r, a, dp, r, act);
      in_rows[i] = dp;
      if constexpr (kSame)
        out_rows[i] = gx + orig[i] * d;
      else
        out_rows[i] = gxt + i * d;
    }
    ops.rows(m, d, r, in_rows.data(), WdT, d, out_rows.data(), nullptr);
    if constexpr (!kSame)
      for (int64_t i = 0; i < m; ++i) from_acc(ops, gxt + i * d, gx + orig[i] * d, d);
  }

  // Owner mode, right after tile(): adds this tile's share to its set's weight gradients
  // while its G and X rows are still in cache (the first tile of a segment overwrites).
  // grad_w_down is accumulated transposed, [r, d], as in weight_slice.
  void weight_tile(const Tile& tile, const std::array<int64_t, kTileRows>& orig) const {
    const int64_t d = p.d, r = p.r, g = p.set[tile.seg], m = tile.rows;
    const bool first = tile.q0 == 0;
    std::array<const acc_t*, kTileRows> a_rows, g_rows, x_rows, p_rows;
    const acc_t* gt = scratch<acc_t>(kX, kTileRows * d);  // tile() widened G there
    acc_t* xt = scratch<acc_t>(kXt, kTileRows * d);
    acc_t* bup = scratch<acc_t>(kBu, d);
    acc_t* bdown = scratch<acc_t>(kBd, r);
    if (first) {
      std::fill(bup, bup + d, acc_t(0));
      std::fill(bdown, bdown + r, acc_t(0));
    }
    const int64_t p0 = p.sorted_row(tile.seg, tile.q0);
    for (int64_t i = 0; i < m; ++i) {
      if constexpr (kSame) {
        g_rows[i] = gout + orig[i] * d;
        x_rows[i] = x + orig[i] * d;
      } else {
        g_rows[i] = gt + i * d;
        to_acc(ops, x + orig[i] * d, xt + i * d, d);
        x_rows[i] = xt + i * d;
      }
      a_rows[i] = act_buf + (p0 + i) * r;
      p_rows[i] = dpre_buf + (p0 + i) * r;
      for (int64_t j = 0; j < d; ++j) bup[j] += g_rows[i][j];
      for (int64_t j = 0; j < r; ++j) bdown[j] += p_rows[i][j];
    }
    acc_t* c_up;
    if constexpr (kSame)
      c_up = gwu + g * r * d;
    else
      c_up = scratch<acc_t>(kGradUp, r * d);
    acc_t* c_down_t = scratch<acc_t>(kGradDownT, r * d);
    ops.cols(r, d, m, a_rows.data(), 0, g_rows.data(), 0, c_up, d, !first);
    ops.cols(r, d, m, p_rows.data(), 0, x_rows.data(), 0, c_down_t, d, !first);
  }

  // Owner mode, after the last tile of segment s: gradients into place.
  void finish_segment(int64_t s) const {
    const int64_t d = p.d, r = p.r, g = p.set[s];
    const acc_t* bup = scratch<acc_t>(kBu, d);
    const acc_t* bdown = scratch<acc_t>(kBd, r);
    if (p.rows(s) == 0) {  // T == 0: no tile ran
      for (scalar_t* t : {gwu + g * r * d, gwd + g * d * r}) std::fill(t, t + r * d, scalar_t(0));
      std::fill(gbu + g * d, gbu + g * d + d, scalar_t(0));
      std::fill(gbd + g * r, gbd + g * r + r, scalar_t(0));
      return;
    }
    for (int64_t j = 0; j < d; ++j) gbu[g * d + j] = static_cast<scalar_t>(bup[j]);
    for (int64_t j = 0; j < r; ++j) gbd[g * r + j] = static_cast<scalar_t>(bdown[j]);
    const acc_t* c_down_t = scratch<acc_t>(kGradDownT, r * d);
    if constexpr (kSame) {
      ops.transpose(r, d, c_down_t, d, gwd + g * d * r, r);
    } else {
      from_acc(ops, scratch<acc_t>(kGradUp, r * d), gwu + g * r * d, r * d);
      acc_t* c_down = scratch<acc_t>(kXt, d * r);
      ops.transpose(r, d, c_down_t, d, c_down, r);
      from_acc(ops, c_down, gwd + g * d * r, d * r);
    }
  }

  // Phase 2 for columns [j0, j0 + js) of d of segment s's set: grad_w_up = A^T G,
  // grad_w_down = X^T dP, grad_b_up (and, for j0 = 0, grad_b_down). The caller owns
  // this slice of the set's gradients: no other task writes it.
  void weight_slice(int64_t s, int64_t j0) const {
    const int64_t d = p.d, r = p.r, g = p.set[s], n = p.rows(s);
    const int64_t js = std::min(kSliceCols, d - j0);
    auto& a_rows = pointer_table<const acc_t*>(0, kChunkRows);  // act(H) rows
    auto& g_rows = pointer_table<const acc_t*>(1, kChunkRows);  // grad_out rows
    auto& x_rows = pointer_table<const acc_t*>(2, kChunkRows);  // x rows
    auto& p_rows = pointer_table<const acc_t*>(3, kChunkRows);  // dP rows
    acc_t* bup = scratch<acc_t>(kBu, kSliceCols);
    acc_t* bdown = scratch<acc_t>(kBd, r);
    std::fill(bup, bup + js, acc_t(0));
    std::fill(bdown, bdown + r, acc_t(0));
    // grad_w_up accumulates straight into the gradient when it is acc_t, else in scratch.
    // grad_w_down is accumulated transposed ([r, slice], r rows of 16-lane vectors over
    // the slice: full-width tiles even for small r) and transposed into place at the end.
    acc_t* c_up;
    int64_t ld_up;
    if constexpr (kSame) {
      c_up = gwu + g * r * d + j0;
      ld_up = d;
    } else {
      c_up = scratch<acc_t>(kCUp, r * kSliceCols);
      ld_up = kSliceCols;
    }
    acc_t* c_down_t = scratch<acc_t>(kCDown, r * kSliceCols);
    for (int64_t k0 = 0; k0 < n || k0 == 0; k0 += kChunkRows) {
      const int64_t kc = std::min(kChunkRows, n - k0);
      int64_t col0 = j0;  // where slice column 0 sits in a g/x row
      if constexpr (!kSame) {
        acc_t* gc = scratch<acc_t>(kX, 2 * kChunkRows * kSliceCols);
        acc_t* xc = gc + kChunkRows * kSliceCols;
        for (int64_t k = 0; k < kc; ++k) {
          const int64_t row = p.original_row(s, k0 + k);
          to_acc(ops, gout + row * d + j0, gc + k * kSliceCols, js);
          to_acc(ops, x + row * d + j0, xc + k * kSliceCols, js);
          g_rows[k] = gc + k * kSliceCols;
          x_rows[k] = xc + k * kSliceCols;
        }
        col0 = 0;
      } else {
        for (int64_t k = 0; k < kc; ++k) {
          const int64_t row = p.original_row(s, k0 + k);
          g_rows[k] = gout + row * d;
          x_rows[k] = x + row * d;
        }
      }
      for (int64_t k = 0; k < kc; ++k) {
        const int64_t sorted = p.sorted_row(s, k0 + k);
        a_rows[k] = act_buf + sorted * r;
        p_rows[k] = dpre_buf + sorted * r;
        for (int64_t j = 0; j < js; ++j) bup[j] += g_rows[k][col0 + j];
        if (j0 == 0)
          for (int64_t j = 0; j < r; ++j) bdown[j] += p_rows[k][j];
      }
      const bool acc = k0 > 0;
      ops.cols(r, js, kc, a_rows.data(), 0, g_rows.data(), col0, c_up, ld_up, acc);
      ops.cols(r, js, kc, p_rows.data(), 0, x_rows.data(), col0, c_down_t, kSliceCols, acc);
    }
    for (int64_t j = 0; j < js; ++j) gbu[g * d + j0 + j] = static_cast<scalar_t>(bup[j]);
    if (j0 == 0)
      for (int64_t j = 0; j < r; ++j) gbd[g * r + j] = static_cast<scalar_t>(bdown[j]);
    if constexpr (kSame) {
      ops.transpose(r, js, c_down_t, kSliceCols, gwd + g * d * r + j0 * r, r);
    } else {
      for (int64_t i = 0; i < r; ++i)
        from_acc(ops, c_up + i * kSliceCols, gwu + g * r * d + i * d + j0, js);
      acc_t* c_down = scratch<acc_t>(kCUp, kSliceCols * r);  // c_up is converted already
      ops.transpose(r, js, c_down_t, kSliceCols, c_down, r);
      from_acc(ops, c_down, gwd + g * d * r + j0 * r, js * r);
    }
  }

  int64_t slices() const { return std::max<int64_t>(1, (p.d + kSliceCols - 1) / kSliceCols); }

  void run() const {
    const int64_t threads = at::get_num_threads(), nseg = p.num_segments();
    if (nseg >= 2 * threads) {
      // Enough sets to go round: each thread owns whole segments (largest first, handed
      // out dynamically) and adds each tile's weight gradients while G and X are in cache.
      std::vector<int64_t> by_size(nseg);
      for (int64_t s = 0; s < nseg; ++s) by_size[s] = s;
      std::stable_sort(by_size.begin(), by_size.end(),
                       [&](int64_t a, int64_t b) { return p.rows(a) > p.rows(b); });
      parallel_dynamic(nseg, [&] {
        return [&, loaded = int64_t(-1)](int64_t i) mutable {
          std::array<int64_t, kTileRows> orig;
          const int64_t s = by_size[i];
          for (int64_t q0 = 0; q0 < p.rows(s); q0 += kTileRows) {
            const Tile t{s, q0, std::min(kTileRows, p.rows(s) - q0)};
            tile(t, loaded, orig);
            weight_tile(t, orig);
          }
          finish_segment(s);
        };
      });
      return;
    }
    // Few (possibly large) segments: token tiles first, then (set, column slice) tasks.
    const std::vector<Tile> tiles = make_tiles(p);
    parallel_dynamic(int64_t(tiles.size()), [&] {
      return [&, loaded = int64_t(-1)](int64_t t) mutable {
        std::array<int64_t, kTileRows> orig;
        tile(tiles[t], loaded, orig);
      };
    });
    parallel_dynamic(nseg * slices(), [&] {
      return [&](int64_t t) { weight_slice(t / slices(), (t % slices()) * kSliceCols); };
    });
  }
};

template <typename scalar_t, typename acc_t>
void backward_impl(const Plan& p, const scalar_t* gout, const scalar_t* x, const scalar_t* wd,
                   const scalar_t* wu, const float* hidden, scalar_t* gx, scalar_t* gwd,
                   scalar_t* gbd, scalar_t* gwu, scalar_t* gbu, Act act,
                   const GemmOps<acc_t>& ops) {
  const int64_t rows_r = p.B * p.T * p.r;
  Backward<scalar_t, acc_t>{p,   gout, x,   wd,  wu,  hidden, gx, gwd, gbd, gwu, gbu, act, ops,
                            scratch<acc_t>(kActBuf, rows_r), scratch<acc_t>(kDpreBuf, rows_r)}
      .run();
}

// ------------------------------------------------------------------ validation
bool force_generic() {
  const char* isa = std::getenv("PHA_CPU_ISA");  // read per call: tests switch it
  if (isa == nullptr || std::string(isa).empty() || std::string(isa) == "auto") return false;
  TORCH_CHECK(std::string(isa) == "generic" || std::string(isa) == "avx512",
              "PHA_CPU_ISA must be 'auto', 'avx512' or 'generic', got '", isa, "'");
  return std::string(isa) == "generic";
}

bool use_avx512() {
  static const bool supported = cpu_has_avx512();
  return supported && !force_generic();
}

template <typename acc_t>
GemmOps<acc_t> select_ops() {
  if constexpr (std::is_same_v<acc_t, float>)
    if (use_avx512()) return avx512_ops();
  return generic_ops<acc_t>();  // float64, CPUs without AVX-512, or PHA_CPU_ISA=generic
}

void check_tensor(const at::Tensor& t, const char* name, int64_t dim) {
  TORCH_CHECK(t.device().is_cpu(), "hyper_adapter (C++ CPU): ", name, " must be a CPU tensor, got ",
              t.device());
  TORCH_CHECK(t.dim() == dim, "hyper_adapter: ", name, " must have ", dim, " dimensions, got shape ",
              t.sizes());
  TORCH_CHECK(t.is_contiguous(), "hyper_adapter: ", name, " must be contiguous");
}

void check_shape(const at::Tensor& t, const char* name, at::IntArrayRef expected,
                 const char* what) {
  TORCH_CHECK(t.sizes() == expected, "hyper_adapter: ", name, " must have shape ", what, " = ",
              expected, ", got ", t.sizes());
}

struct Dims {
  int64_t B, T, d, r, G;
};

// Shapes, dtypes, devices, contiguity and the index range, before any pointer is read.
Dims check_inputs(const at::Tensor& x, const at::Tensor& w_down, const at::Tensor& w_up,
                  const c10::optional<at::Tensor>& index) {
  check_tensor(x, "x", 3);
  check_tensor(w_down, "w_down", 3);
  check_tensor(w_up, "w_up", 3);
  const Dims dims{x.size(0), x.size(1), x.size(2), w_down.size(2), w_down.size(0)};
  const auto dt = x.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kBFloat16 || dt == at::kDouble,
              "hyper_adapter (C++ CPU): x must be float32, bfloat16 or float64, got ", dt);
  check_shape(w_down, "w_down", {dims.G, dims.d, dims.r}, "[G, d, r]");
  check_shape(w_up, "w_up", {dims.G, dims.r, dims.d}, "[G, r, d]");
  for (const auto* t : {&w_down, &w_up})
    TORCH_CHECK(t->scalar_type() == dt, "hyper_adapter: all floating inputs must have the dtype of x (",
                dt, "), got ", t->scalar_type());
  if (!index.has_value()) {
    TORCH_CHECK(dims.G == dims.B, "hyper_adapter: without index, w_down.shape[0] (G=", dims.G,
                ") must equal x.shape[0] (B=", dims.B, ")");
    return dims;
  }
  const at::Tensor& idx = *index;
  check_tensor(idx, "index", 1);
  TORCH_CHECK(idx.scalar_type() == at::kLong, "hyper_adapter: index must be int64, got ",
              idx.scalar_type());
  TORCH_CHECK(idx.size(0) == dims.B, "hyper_adapter: index must have shape [B=", dims.B, "], got ",
              idx.sizes());
  const int64_t* v = idx.data_ptr<int64_t>();
  for (int64_t b = 0; b < dims.B; ++b)
    TORCH_CHECK(v[b] >= 0 && v[b] < dims.G, "hyper_adapter: index values must lie in [0, ", dims.G,
                "), got index[", b, "] = ", v[b]);
  return dims;
}

void check_same(const at::Tensor& t, const at::Tensor& like, const char* name, at::IntArrayRef shape,
                const char* what) {
  check_tensor(t, name, int64_t(shape.size()));
  check_shape(t, name, shape, what);
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), "hyper_adapter: ", name,
              " must have the dtype of x (", like.scalar_type(), "), got ", t.scalar_type());
}

// ------------------------------------------------------------------ launchers
std::tuple<at::Tensor, at::Tensor> hyper_adapter_forward(
    const at::Tensor& x, const at::Tensor& w_down, const at::Tensor& b_down, const at::Tensor& w_up,
    const at::Tensor& b_up, const c10::optional<at::Tensor>& index, c10::string_view activation,
    bool save_hidden) {
  const Dims n = check_inputs(x, w_down, w_up, index);
  check_same(b_down, x, "b_down", {n.G, n.r}, "[G, r]");
  check_same(b_up, x, "b_up", {n.G, n.d}, "[G, d]");
  const Act act = parse_activation(std::string(activation));
  at::Tensor out = at::empty_like(x);
  at::Tensor hidden = save_hidden ? at::empty({n.B, n.T, n.r}, x.options().dtype(at::kFloat))
                                  : at::empty({0}, x.options().dtype(at::kFloat));
  const Plan plan = make_plan(n.B, n.T, n.d, n.r, n.G, index);
  float* hid = save_hidden ? hidden.data_ptr<float>() : nullptr;
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "hyper_adapter_forward", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const GemmOps<acc_t> ops = select_ops<acc_t>();
    forward_impl<scalar_t, acc_t>(plan, x.data_ptr<scalar_t>(), w_down.data_ptr<scalar_t>(),
                                  b_down.data_ptr<scalar_t>(), w_up.data_ptr<scalar_t>(),
                                  b_up.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), hid, act,
                                  ops);
  });
  return {out, hidden};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> hyper_adapter_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w_down,
    const at::Tensor& w_up, const at::Tensor& hidden, const c10::optional<at::Tensor>& index,
    c10::string_view activation) {
  const Dims n = check_inputs(x, w_down, w_up, index);
  check_same(grad_out, x, "grad_out", {n.B, n.T, n.d}, "[B, T, d] (x's shape)");
  check_tensor(hidden, "hidden", 3);
  check_shape(hidden, "hidden", {n.B, n.T, n.r}, "[B, T, r] (saved by forward with save_hidden)");
  TORCH_CHECK(hidden.scalar_type() == at::kFloat, "hyper_adapter: hidden must be float32, got ",
              hidden.scalar_type());
  const Act act = parse_activation(std::string(activation));
  at::Tensor gx = at::empty_like(x);
  at::Tensor gwd = at::empty_like(w_down), gwu = at::empty_like(w_up);
  at::Tensor gbd = at::empty({n.G, n.r}, x.options()), gbu = at::empty({n.G, n.d}, x.options());
  const Plan plan = make_plan(n.B, n.T, n.d, n.r, n.G, index);
  // Sets no instance uses get a zero gradient; every other set is fully overwritten.
  std::vector<bool> used(n.G, false);
  for (int64_t g : plan.set) used[g] = true;
  for (int64_t g = 0; g < n.G; ++g)
    if (!used[g])
      for (at::Tensor* t : {&gwd, &gwu, &gbd, &gbu}) (*t)[g].zero_();
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "hyper_adapter_backward", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const GemmOps<acc_t> ops = select_ops<acc_t>();
    backward_impl<scalar_t, acc_t>(
        plan, grad_out.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), w_down.data_ptr<scalar_t>(),
        w_up.data_ptr<scalar_t>(), hidden.data_ptr<float>(), gx.data_ptr<scalar_t>(),
        gwd.data_ptr<scalar_t>(), gbd.data_ptr<scalar_t>(), gwu.data_ptr<scalar_t>(),
        gbu.data_ptr<scalar_t>(), act, ops);
  });
  return {gx, gwd, gbd, gwu, gbu};
}

std::string hyper_adapter_isa() { return use_avx512() ? "avx512" : "generic"; }

}  // namespace
}  // namespace pha_cpu

TORCH_LIBRARY_FRAGMENT(pha_cpu, m) {
  m.def(
      "hyper_adapter_forward(Tensor x, Tensor w_down, Tensor b_down, Tensor w_up, Tensor b_up, "
      "Tensor? index, str activation, bool save_hidden) -> (Tensor, Tensor)");
  m.def(
      "hyper_adapter_backward(Tensor grad_out, Tensor x, Tensor w_down, Tensor w_up, "
      "Tensor hidden, Tensor? index, str activation) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // Which kernels a call would run now ("avx512" or "generic"; PHA_CPU_ISA=generic forces
  // the portable path).
  m.def("hyper_adapter_isa() -> str", &pha_cpu::hyper_adapter_isa);
}

TORCH_LIBRARY_IMPL(pha_cpu, CPU, m) {
  m.impl("hyper_adapter_forward", &pha_cpu::hyper_adapter_forward);
  m.impl("hyper_adapter_backward", &pha_cpu::hyper_adapter_backward);
}

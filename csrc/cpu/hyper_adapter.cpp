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
//                        the bias sums, over all the set's token rows at once (1024-row
//                        chunks). Each task owns its slice of one set's gradients, so the
//                        reduction over instances needs no atomics and no partials. With
//                        enough sets to go round, a thread runs both phases of a whole set.
// Arithmetic is fp64 for fp64 and fp32 otherwise. bf16 operands are widened to fp32 in
// scratch, or, on the avx512_bf16 path, stay bf16 for dot-product kernels that accumulate in
// fp32 (act(H) and dP then round to bf16 before their products, as eager bf16 does); on the
// amx_bf16 path those bf16 GEMMs run on AMX tiles.
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

#include "cpu_isa.h"
#include "hyper_adapter_gemm.h"
#include "hyper_adapter_gemm_amx.h"
#include "hyper_adapter_gemm_bf16.h"

namespace pha_cpu {
namespace {

constexpr int64_t kTileRows = 64;     // token rows per tile (forward, backward phase 1)
constexpr int64_t kSliceCols = 64;    // columns of d per weight-gradient task (fp32 operands)
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
    case Act::Relu: return h < T(0) ? T(0) : h;  // NaN stays NaN, as in torch.relu
    case Act::Gelu: {  // tanh form
      const T u = T(0.7978845608028654) * (h + T(0.044715) * h * h * h);
      return T(0.5) * h * (T(1) + std::tanh(u));
    }
    case Act::Silu: return h / (T(1) + std::exp(-h));
    default: return h;
  }
}

// g * act'(h). relu selects rather than multiplies, as torch's threshold_backward does: a
// NaN or Inf g where h <= 0 gives 0, and a NaN h passes g.
template <typename T>
inline T backprop(T h, T g, Act act) {
  switch (act) {
    case Act::Relu: return h <= T(0) ? T(0) : g;
    case Act::Gelu: {
      const T c = T(0.7978845608028654), a = T(0.044715);
      const T th = std::tanh(c * (h + a * h * h * h));
      return g * (T(0.5) * (T(1) + th) + T(0.5) * h * (T(1) - th * th) * c * (T(1) + T(3) * a * h * h));
    }
    case Act::Silu: {
      const T s = T(1) / (T(1) + std::exp(-h));
      return g * (s * (T(1) + h * (T(1) - s)));
    }
    default: return g;
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

template <Act A, typename T, typename op_t>
void activate_and_grad_row_as(const float* h, const T* dh, op_t* a, op_t* dp, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const T hj = static_cast<T>(h[j]);
    a[j] = static_cast<op_t>(activate(hj, A));
    dp[j] = static_cast<op_t>(backprop(hj, dh[j], A));
  }
}

// a <- act(h), dp <- dh * act'(h), rounded to the operand type op_t.
template <typename T, typename op_t>
void activate_and_grad_row(const float* h, const T* dh, op_t* a, op_t* dp, int64_t n, Act act) {
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
  kX, kA, kWd, kWu, kBd, kBu, kCUp, kCDown, kGx, kActBuf, kDpreBuf,
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
template <typename scalar_t, typename op_t, typename acc_t>
inline void to_acc(const GemmOps<op_t, acc_t>& ops, const scalar_t* src, acc_t* dst, int64_t n) {
  if constexpr (std::is_same_v<scalar_t, c10::BFloat16>)
    ops.widen_bf16(reinterpret_cast<const uint16_t*>(src), dst, n);
  else
    convert(src, dst, n);
}

template <typename scalar_t, typename op_t, typename acc_t>
inline void from_acc(const GemmOps<op_t, acc_t>& ops, const acc_t* src, scalar_t* dst, int64_t n) {
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

// Segment ids, most token rows first (stable).
std::vector<int64_t> largest_first(const Plan& p) {
  std::vector<int64_t> order(p.num_segments());
  for (int64_t s = 0; s < p.num_segments(); ++s) order[s] = s;
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return p.rows(a) > p.rows(b); });
  return order;
}

// Whether there are enough segments to hand out whole (two per thread at least).
bool whole_segments(const Plan& p) { return p.num_segments() >= 2 * at::get_num_threads(); }

// Calls tile_fn(tile) for every token tile, make_worker() giving each thread's tile_fn.
// By segment (whole segments per task, largest first) a thread runs all tiles of a set
// in a row, so whatever it loads per set (packed weights) is loaded once per set; else
// one tile per task, which balances better when there are few segments.
template <typename MakeWorker>
void for_each_tile(const Plan& p, bool by_segment, const MakeWorker& make_worker) {
  if (by_segment) {
    const std::vector<int64_t> order = largest_first(p);
    parallel_dynamic(p.num_segments(), [&] {
      return [&, tile_fn = make_worker()](int64_t i) mutable {
        const int64_t s = order[i];
        for (int64_t q0 = 0; q0 < p.rows(s); q0 += kTileRows)
          tile_fn(Tile{s, q0, std::min(kTileRows, p.rows(s) - q0)});
      };
    });
    return;
  }
  const std::vector<Tile> tiles = make_tiles(p);
  parallel_dynamic(int64_t(tiles.size()), [&] {
    return [&, tile_fn = make_worker()](int64_t t) mutable { tile_fn(tiles[t]); };
  });
}

// A weight set in the accumulation type: the tensors themselves when the dtype matches,
// else a widened copy in scratch (made once per set per thread, not per tile).
template <typename scalar_t, typename op_t, typename acc_t>
const acc_t* as_acc(const GemmOps<op_t, acc_t>& ops, const scalar_t* src, int64_t n, Slot slot) {
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    return src;
  } else {
    acc_t* dst = scratch<acc_t>(slot, n);
    to_acc(ops, src, dst, n);
    return dst;
  }
}

// The B operand of ops.rows for src^T, src an N x K weight (row stride K), put in scratch
// `slot`: transposed, widened to acc_t where the operands are acc_t; packed straight from
// the bf16 weight for bf16 operands.
template <typename scalar_t, typename op_t, typename acc_t>
void transposed_panel(const GemmOps<op_t, acc_t>& ops, const scalar_t* src, int64_t K, int64_t N,
                      Slot slot) {
  if constexpr (std::is_same_v<op_t, acc_t>)
    ops.transpose(N, K, as_acc(ops, src, N * K, kCUp), K, scratch<acc_t>(slot, K * N), N);
  else
    ops.pack_panel_t(K, N, src, scratch<op_t>(slot, ops.panel_elems(K, N)));
}

// Where transposed_panel put its K x N panel.
template <typename op_t, typename acc_t>
const op_t* panel_in(const GemmOps<op_t, acc_t>& ops, int64_t K, int64_t N, Slot slot) {
  if constexpr (std::is_same_v<op_t, acc_t>)
    return scratch<acc_t>(slot, K * N);
  else
    return scratch<op_t>(slot, ops.panel_elems(K, N));
}

// A weight set of scalar_t (K x N) as a panel: itself for fp32 / fp64, widened for bf16 on
// fp32 kernels, packed (ops.pack_panel) for bf16 operands.
template <typename scalar_t, typename op_t, typename acc_t>
const op_t* weight_panel(const GemmOps<op_t, acc_t>& ops, const scalar_t* src, int64_t K,
                         int64_t N, Slot slot) {
  if constexpr (std::is_same_v<op_t, acc_t>) {
    return as_acc(ops, src, K * N, slot);
  } else {
    op_t* dst = scratch<op_t>(slot, ops.panel_elems(K, N));
    ops.pack_panel(K, N, src, N, dst);
    return dst;
  }
}

// Rows of operands: a row of scalar_t as op_t (itself, or widened into `buf`).
template <typename scalar_t, typename op_t, typename acc_t>
const op_t* as_operand(const GemmOps<op_t, acc_t>& ops, const scalar_t* src, op_t* buf, int64_t n) {
  if constexpr (std::is_same_v<scalar_t, op_t>) {
    return src;
  } else {
    to_acc(ops, src, buf, n);  // scalar_t bf16, op_t = acc_t fp32
    return buf;
  }
}

// An acc_t row as op_t in place (same type) or rounded into `dst`.
template <typename op_t, typename acc_t>
const op_t* to_operand(const GemmOps<op_t, acc_t>& ops, const acc_t* src, op_t* dst, int64_t n) {
  if constexpr (std::is_same_v<op_t, acc_t>) {
    return src;
  } else {
    ops.narrow_bf16(src, reinterpret_cast<uint16_t*>(dst), n);
    return dst;
  }
}

// C rows dst[i][0:N] = A B (+ bias), i < M <= kTileRows: written in place when scalar_t is
// acc_t, else rounded to bf16 as they are written (ops.rows_narrow) or through the fp32
// rows `tmp` (M x N).
template <typename scalar_t, typename op_t, typename acc_t>
void rows_out(const GemmOps<op_t, acc_t>& ops, int64_t M, int64_t N, int64_t K,
              const op_t* const* a, const op_t* b, scalar_t* const* dst, const acc_t* bias,
              acc_t* tmp) {
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    ops.rows(M, N, K, a, b, N, dst, bias);
  } else if (ops.rows_narrow) {
    static_assert(std::is_same_v<scalar_t, c10::BFloat16>, "narrowed rows are bfloat16");
    ops.rows_narrow(M, N, K, a, b, N, reinterpret_cast<uint16_t* const*>(dst), bias);
  } else {
    std::array<acc_t*, kTileRows> rows;
    for (int64_t i = 0; i < M; ++i) rows[i] = tmp + i * N;
    ops.rows(M, N, K, a, b, N, rows.data(), bias);
    for (int64_t i = 0; i < M; ++i) from_acc(ops, tmp + i * N, dst[i], N);
  }
}

// ------------------------------------------------------------------ forward
template <typename scalar_t, typename acc_t, typename op_t>
void forward_impl(const Plan& p, const scalar_t* x, const scalar_t* wd, const scalar_t* bd,
                  const scalar_t* wu, const scalar_t* bu, scalar_t* out, float* hidden, Act act,
                  const GemmOps<op_t, acc_t>& ops) {
  const int64_t d = p.d, r = p.r;
  // Loading a set copies its weights (packed or widened) unless they are used in place.
  constexpr bool kCopies = !std::is_same_v<scalar_t, op_t> || !std::is_same_v<op_t, acc_t>;
  for_each_tile(p, kCopies && whole_segments(p), [&] {
    return [&, loaded = int64_t(-1), Wd = (const op_t*)nullptr, Bd = (const acc_t*)nullptr,
            Wu = (const op_t*)nullptr, Bu = (const acc_t*)nullptr](const Tile& tile) mutable {
      std::array<const op_t*, kTileRows> in_rows;
      std::array<acc_t*, kTileRows> out_rows;
      std::array<scalar_t*, kTileRows> dst_rows;
      std::array<int64_t, kTileRows> orig;
      const int64_t g = p.set[tile.seg], m = tile.rows;
      if (g != loaded) {
        Wd = weight_panel(ops, wd + g * d * r, d, r, kWd);
        Bd = as_acc(ops, bd + g * r, r, kBd);
        Wu = weight_panel(ops, wu + g * r * d, r, d, kWu);
        Bu = as_acc(ops, bu + g * d, d, kBu);
        loaded = g;
      }
      op_t* xt = scratch<op_t>(kX, kTileRows * d);      // widened x rows
      acc_t* ot = scratch<acc_t>(kGx, kTileRows * d);   // out rows before narrowing, if so
      acc_t* at = scratch<acc_t>(kA, kTileRows * r);    // H, then act(H)
      op_t* ao = scratch<op_t>(kCDown, kTileRows * r);  // act(H) as operand
      for (int64_t i = 0; i < m; ++i) {
        orig[i] = p.original_row(tile.seg, tile.q0 + i);
        in_rows[i] = as_operand(ops, x + orig[i] * d, xt + i * d, d);
        out_rows[i] = at + i * r;
      }
      ops.rows(m, r, d, in_rows.data(), Wd, r, out_rows.data(), Bd);
      for (int64_t i = 0; i < m; ++i) {
        acc_t* h = at + i * r;
        if (hidden) convert(h, hidden + orig[i] * r, r);
        activate_row(h, r, act);
        in_rows[i] = to_operand(ops, h, ao + i * r, r);
        dst_rows[i] = out + orig[i] * d;
      }
      rows_out(ops, m, d, r, in_rows.data(), Wu, dst_rows.data(), Bu, ot);
    };
  });
}

// ------------------------------------------------------------------ backward
template <typename scalar_t, typename acc_t, typename op_t>
struct Backward {
  static constexpr bool kDirect = std::is_same_v<scalar_t, op_t>;    // inputs as operands
  static constexpr bool kSame = std::is_same_v<scalar_t, acc_t>;     // outputs in place
  static constexpr bool kPacked = !std::is_same_v<op_t, acc_t>;      // operands packed per call
  const Plan& p;
  const scalar_t *gout, *x, *wd, *wu;
  const float* hidden;
  scalar_t *gx, *gwd, *gbd, *gwu, *gbu;
  Act act;
  const GemmOps<op_t, acc_t>& ops;
  op_t* act_buf;   // act(H) of every token row, in segment order [B*T, r]
  op_t* dpre_buf;  // dP, likewise

  // Phase 1 for one token tile: dH = G Wu^T, dP = dH * act'(H), grad_x = dP Wd^T.
  // `loaded` is the set whose transposed weights this thread holds in scratch.
  void tile(const Tile& tile, int64_t& loaded) const {
    const int64_t d = p.d, r = p.r, g = p.set[tile.seg], m = tile.rows;
    if (g != loaded) {
      transposed_panel(ops, wu + g * r * d, d, r, kWu);
      transposed_panel(ops, wd + g * d * r, r, d, kWd);
      loaded = g;
    }
    // The panels transposed_panel made (scratch keeps them between tiles of one set).
    const op_t* WuP = panel_in(ops, d, r, kWu);
    const op_t* WdP = panel_in(ops, r, d, kWd);
    std::array<const op_t*, kTileRows> in_rows;
    std::array<acc_t*, kTileRows> out_rows;
    std::array<scalar_t*, kTileRows> gx_rows;
    std::array<int64_t, kTileRows> orig;
    op_t* gt = scratch<op_t>(kX, kTileRows * d);      // widened grad_out
    acc_t* gxt = scratch<acc_t>(kGx, kTileRows * d);  // grad_x before narrowing, if so
    acc_t* dh = scratch<acc_t>(kA, kTileRows * r);
    for (int64_t i = 0; i < m; ++i) {
      orig[i] = p.original_row(tile.seg, tile.q0 + i);
      in_rows[i] = as_operand(ops, gout + orig[i] * d, gt + i * d, d);
      out_rows[i] = dh + i * r;
    }
    ops.rows(m, r, d, in_rows.data(), WuP, r, out_rows.data(), nullptr);
    const int64_t p0 = p.sorted_row(tile.seg, tile.q0);
    for (int64_t i = 0; i < m; ++i) {
      const float* h = hidden + orig[i] * r;
      op_t* a = act_buf + (p0 + i) * r;
      op_t* dp = dpre_buf + (p0 + i) * r;
      if (act == Act::Relu)
        ops.relu_and_grad(h, dh + i * r, a, dp, r);
      else
        activate_and_grad_row(h, dh + i * r, a, dp, r, act);
      in_rows[i] = dp;
      gx_rows[i] = gx + orig[i] * d;
    }
    rows_out(ops, m, d, r, in_rows.data(), WdP, gx_rows.data(), (const acc_t*)nullptr, gxt);
  }

  // Phase 2 for columns [j0, j0 + js) of d of segment s's set, over all its token rows:
  // grad_w_up = A^T G, grad_w_down = X^T dP, grad_b_up (and, for j0 = 0, grad_b_down).
  // The caller owns this slice of the set's gradients: no other task writes it.
  void weight_slice(int64_t s, int64_t j0, int64_t js) const {
    const int64_t d = p.d, r = p.r, g = p.set[s], n = p.rows(s);
    auto& a_rows = pointer_table<const op_t*>(0, kChunkRows);  // act(H) rows
    auto& g_rows = pointer_table<const op_t*>(1, kChunkRows);  // grad_out rows
    auto& x_rows = pointer_table<const op_t*>(2, kChunkRows);  // x rows
    auto& p_rows = pointer_table<const op_t*>(3, kChunkRows);  // dP rows
    acc_t* bup = scratch<acc_t>(kBu, js);
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
      c_up = scratch<acc_t>(kCUp, r * js);
      ld_up = js;
    }
    acc_t* c_down_t = scratch<acc_t>(kCDown, r * js);
    // bf16 gradients leave the kernel rounded when one pass covers all the set's rows.
    bool narrow_out = false;
    if constexpr (!kSame) narrow_out = ops.cols_narrow && n <= kChunkRows;
    for (int64_t k0 = 0; k0 < n || k0 == 0; k0 += kChunkRows) {
      const int64_t kc = std::min(kChunkRows, n - k0);
      int64_t col0 = j0;  // where slice column 0 sits in a g/x row
      if constexpr (!kDirect) {
        op_t* gc = scratch<op_t>(kX, 2 * kChunkRows * js);
        op_t* xc = gc + kChunkRows * js;
        for (int64_t k = 0; k < kc; ++k) {
          const int64_t row = p.original_row(s, k0 + k);
          to_acc(ops, gout + row * d + j0, gc + k * js, js);
          to_acc(ops, x + row * d + j0, xc + k * js, js);
          g_rows[k] = gc + k * js;
          x_rows[k] = xc + k * js;
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
      }
      ops.col_sums(kc, js, g_rows.data(), col0, bup);
      if (j0 == 0) ops.col_sums(kc, r, p_rows.data(), 0, bdown);
      if constexpr (!kSame) {
        if (narrow_out) {
          auto* gwu_bits = reinterpret_cast<uint16_t*>(gwu + g * r * d + j0);
          auto* gwd_bits = reinterpret_cast<uint16_t*>(gwd + g * d * r + j0 * r);
          ops.cols_narrow(r, js, kc, a_rows.data(), 0, g_rows.data(), col0, gwu_bits, d, false);
          ops.cols_narrow(r, js, kc, p_rows.data(), 0, x_rows.data(), col0, gwd_bits, r, true);
          continue;
        }
      }
      const bool acc = k0 > 0;
      ops.cols(r, js, kc, a_rows.data(), 0, g_rows.data(), col0, c_up, ld_up, acc);
      ops.cols(r, js, kc, p_rows.data(), 0, x_rows.data(), col0, c_down_t, js, acc);
    }
    for (int64_t j = 0; j < js; ++j) gbu[g * d + j0 + j] = static_cast<scalar_t>(bup[j]);
    if (j0 == 0)
      for (int64_t j = 0; j < r; ++j) gbd[g * r + j] = static_cast<scalar_t>(bdown[j]);
    if constexpr (kSame) {
      ops.transpose(r, js, c_down_t, js, gwd + g * d * r + j0 * r, r);
    } else if (!narrow_out) {
      for (int64_t i = 0; i < r; ++i)
        from_acc(ops, c_up + i * js, gwu + g * r * d + i * d + j0, js);
      acc_t* c_down = scratch<acc_t>(kCUp, js * r);  // c_up is converted already
      ops.transpose(r, js, c_down_t, js, c_down, r);
      from_acc(ops, c_down, gwd + g * d * r + j0 * r, js * r);
    }
  }

  // Columns of d per weight_slice task. Packed operands (bf16) repack the r-wide operand
  // (act(H) or dP, transposed) in every call, so they take wide slices: as few as give
  // `tasks_per_set` tasks per set. fp32 operands are read in place: 64-column slices.
  int64_t slice_cols(int64_t tasks_per_set) const {
    if constexpr (kPacked) {
      const int64_t n = std::max<int64_t>(1, tasks_per_set), per_task = (p.d + n - 1) / n;
      return std::max<int64_t>(1, std::min(p.d, (per_task + 31) / 32 * 32));
    } else {
      return kSliceCols;
    }
  }

  void weight_slices(int64_t s, int64_t width) const {  // all of set s's columns (d = 0 too)
    for (int64_t j0 = 0; j0 < p.d || j0 == 0; j0 += width)
      weight_slice(s, j0, std::min(width, p.d - j0));
  }

  void run() const {
    const int64_t threads = at::get_num_threads(), nseg = p.num_segments();
    if (whole_segments(p)) {
      // Enough sets to go round: each thread owns whole segments (largest first, handed
      // out dynamically), its token tiles, then its weight gradients.
      const std::vector<int64_t> by_size = largest_first(p);
      // Operands used in place take the whole width in one slice; widened ones (bf16 on
      // fp32 kernels) go 64 columns at a time through scratch.
      const int64_t width = kDirect ? std::max<int64_t>(1, p.d) : kSliceCols;
      parallel_dynamic(nseg, [&] {
        return [&, loaded = int64_t(-1)](int64_t i) mutable {
          const int64_t s = by_size[i];
          for (int64_t q0 = 0; q0 < p.rows(s); q0 += kTileRows)
            tile({s, q0, std::min(kTileRows, p.rows(s) - q0)}, loaded);
          weight_slices(s, width);
        };
      });
      return;
    }
    // Few (possibly large) segments: token tiles first, then (set, column slice) tasks.
    for_each_tile(p, false, [&] {
      return [&, loaded = int64_t(-1)](const Tile& t) mutable { tile(t, loaded); };
    });
    const int64_t width = slice_cols((2 * threads + nseg - 1) / nseg);
    const int64_t slices = std::max<int64_t>(1, (p.d + width - 1) / width);
    parallel_dynamic(nseg * slices, [&] {
      return [&](int64_t t) {
        const int64_t j0 = (t % slices) * width;
        weight_slice(t / slices, j0, std::min(width, p.d - j0));
      };
    });
  }
};

template <typename scalar_t, typename acc_t, typename op_t>
void backward_impl(const Plan& p, const scalar_t* gout, const scalar_t* x, const scalar_t* wd,
                   const scalar_t* wu, const float* hidden, scalar_t* gx, scalar_t* gwd,
                   scalar_t* gbd, scalar_t* gwu, scalar_t* gbu, Act act,
                   const GemmOps<op_t, acc_t>& ops) {
  const int64_t rows_r = p.B * p.T * p.r;
  Backward<scalar_t, acc_t, op_t>{p,  gout, x,  wd,  wu,  hidden, gx, gwd, gbd, gwu, gbu, act,
                                  ops, scratch<op_t>(kActBuf, rows_r),
                                  scratch<op_t>(kDpreBuf, rows_r)}
      .run();
}

// ------------------------------------------------------------------ validation
// Calls run(ops) with the GEMM ops of the active ISA path for scalar_t inputs: the portable
// templates for float64 and PHA_CPU_ISA=generic, the fp32 AVX-512 kernels for fp32 (and
// bf16, widened, on the avx512 path), the bf16 dot-product kernels for bf16 on avx512_bf16,
// the AMX tile kernels for bf16 on amx_bf16.
template <typename scalar_t, typename Run>
void with_ops(const Run& run) {
  using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
  const Isa isa = active_isa();
  if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
    if (isa == Isa::Avx512Bf16) return run(avx512_bf16_ops());
    if (isa == Isa::AmxBf16) return run(amx_bf16_ops());
  }
  if constexpr (std::is_same_v<acc_t, float>)
    if (isa != Isa::Generic) return run(avx512_ops());
  run(generic_ops<acc_t>());
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
    with_ops<scalar_t>([&](const auto& ops) {
      forward_impl(plan, x.data_ptr<scalar_t>(), w_down.data_ptr<scalar_t>(),
                   b_down.data_ptr<scalar_t>(), w_up.data_ptr<scalar_t>(),
                   b_up.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), hid, act, ops);
    });
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
    with_ops<scalar_t>([&](const auto& ops) {
      backward_impl(plan, grad_out.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(),
                    w_down.data_ptr<scalar_t>(), w_up.data_ptr<scalar_t>(),
                    hidden.data_ptr<float>(), gx.data_ptr<scalar_t>(), gwd.data_ptr<scalar_t>(),
                    gbd.data_ptr<scalar_t>(), gwu.data_ptr<scalar_t>(), gbu.data_ptr<scalar_t>(),
                    act, ops);
    });
  });
  return {gx, gwd, gbd, gwu, gbu};
}

}  // namespace
}  // namespace pha_cpu

TORCH_LIBRARY_IMPL(pha_C, CPU, m) {
  m.impl("hyper_adapter_forward", &pha_cpu::hyper_adapter_forward);
  m.impl("hyper_adapter_backward", &pha_cpu::hyper_adapter_backward);
}

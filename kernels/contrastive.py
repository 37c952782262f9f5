"""Triton kernels of the contrastive losses: pha.ops.supcon_loss (L_ins) and
pha.ops.prototype_loss (L_pro), on the launcher contract of pha.ops.contrastive.

Both losses are a row-wise log-softmax over scores S = A @ B^T / tau between L2-normalised
rows, with a "positive" set per row:
  supcon:    A = B = zn; the diagonal is left out; j is a positive of i when y_j == y_i.
  prototype: A = zn, B = pn; the positive of i is column y_i (left out of the
             denominator when exclude_positive).
    row loss_i = lse_i - pos_i / n_i,  lse_i = log sum_{j in denominator} exp S_ij,
                                       pos_i = sum of S over i's positives, n_i their count.
The B x B (or B x K) matrix never exists in memory:
  forward   one program per row tile, an online log-sum-exp over column tiles -> lse, pos.
  backward  dS_ij = coef_i * softmax_ij - pcoef_i * [j positive for i]  (recomputed per tile)
            row pass:    dA_i = sum_j dS_ij B_j   (one program per row tile x D chunk)
            column pass: dB_j = sum_i dS_ij A_i   (one program per column tile x D chunk)
            Every program owns its output rows: no atomics.
The positives are masked inside the tiles (labels are compared, never used as addresses),
so arbitrary int64 class ids need no compaction and nothing is gathered by label.
Normalisation, its backward and the per-row scalars (counts, weights, the final mean) are
O(B*D) torch ops in the launchers.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

EPS = 1e-12  # F.normalize's default
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

if _INTERPRET:
    # The interpreter runs one config (several fail); 16 is the smallest block a GPU accepts.
    _CONFIGS = [triton.Config({"BLOCK_I": 16, "BLOCK_J": 16}, num_warps=1)]
else:
    _CONFIGS = [
        triton.Config({"BLOCK_I": bi, "BLOCK_J": bj}, num_warps=w, num_stages=s)
        for bi, bj, w, s in ((64, 64, 4, 2), (128, 64, 8, 2), (64, 32, 4, 3), (32, 32, 4, 2))
    ]
_AUTOTUNE = dict(configs=_CONFIGS, key=["M", "N", "D"])


@triton.jit
def _scores(a_ptr, b_ptr, offs_i, offs_j, M, N, D, scale, BLOCK_I: tl.constexpr,
            BLOCK_J: tl.constexpr, BLOCK_D: tl.constexpr, DOT_F32: tl.constexpr):  # fmt: skip
    """The [BLOCK_I, BLOCK_J] tile of S = A @ B^T * scale, fp32-accumulated over D."""
    acc = tl.zeros((BLOCK_I, BLOCK_J), tl.float32)
    rows_a = offs_i.to(tl.int64)[:, None] * D
    rows_b = offs_j.to(tl.int64)[:, None] * D
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        in_d = offs_d[None, :] < D
        a = tl.load(a_ptr + rows_a + offs_d[None, :], mask=(offs_i[:, None] < M) & in_d, other=0.0)
        b = tl.load(b_ptr + rows_b + offs_d[None, :], mask=(offs_j[:, None] < N) & in_d, other=0.0)
        if DOT_F32:  # the interpreter computes bf16 dots wrongly
            a, b = a.to(tl.float32), b.to(tl.float32)
        acc = tl.dot(a, tl.trans(b), acc, input_precision="ieee")
    return acc * scale


@triton.jit
def _masks(labels_ptr, offs_i, offs_j, M, N, SELF: tl.constexpr, EXCLUDE_POS: tl.constexpr):
    """(positive, in_denominator) boolean tiles; see the module docstring."""
    lab_i = tl.load(labels_ptr + offs_i, mask=offs_i < M, other=-1)
    inside = (offs_i[:, None] < M) & (offs_j[None, :] < N)
    if SELF:
        lab_j = tl.load(labels_ptr + offs_j, mask=offs_j < N, other=-1)
        denom = inside & (offs_i[:, None] != offs_j[None, :])
        positive = denom & (lab_i[:, None] == lab_j[None, :])
    else:
        positive = inside & (lab_i[:, None] == offs_j[None, :])
        denom = inside
        if EXCLUDE_POS:
            denom = denom & ~positive
    return positive, denom


@triton.autotune(**_AUTOTUNE)
@triton.jit
def _forward_kernel(a_ptr, b_ptr, labels_ptr, lse_ptr, pos_ptr, M, N, D, scale,
                    SELF: tl.constexpr, EXCLUDE_POS: tl.constexpr, BLOCK_D: tl.constexpr,
                    DOT_F32: tl.constexpr,
                    BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr):  # fmt: skip
    """lse[i] and pos[i] for one row tile (online log-sum-exp over column tiles)."""
    offs_i = tl.program_id(0) * BLOCK_I + tl.arange(0, BLOCK_I)
    m = tl.full((BLOCK_I,), float("-inf"), tl.float32)
    total = tl.zeros((BLOCK_I,), tl.float32)
    pos = tl.zeros((BLOCK_I,), tl.float32)
    for j0 in range(0, N, BLOCK_J):
        offs_j = j0 + tl.arange(0, BLOCK_J)
        s = _scores(
            a_ptr, b_ptr, offs_i, offs_j, M, N, D, scale, BLOCK_I, BLOCK_J, BLOCK_D, DOT_F32
        )
        positive, denom = _masks(labels_ptr, offs_i, offs_j, M, N, SELF, EXCLUDE_POS)
        pos += tl.sum(tl.where(positive, s, 0.0), axis=1)
        s = tl.where(denom, s, float("-inf"))  # NaN scores stay NaN: NaN in, NaN out
        m_new = tl.maximum(m, tl.max(s, axis=1))
        # Rows with nothing in the denominator yet keep m = -inf: shift by 0, not by -inf.
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        total = total * tl.exp(m - shift) + tl.sum(tl.exp(s - shift[:, None]), axis=1)
        m = m_new
    empty = total == 0.0  # nothing in the denominator: lse = -inf (log(0) without the warning)
    lse = tl.where(empty, float("-inf"), m + tl.log(tl.where(empty, 1.0, total)))
    if not SELF:  # a prototype id out of [0, N) poisons its row instead of being ignored
        lab_i = tl.load(labels_ptr + offs_i, mask=offs_i < M, other=0)
        lse = tl.where((lab_i < 0) | (lab_i >= N), float("nan"), lse)
    tl.store(lse_ptr + offs_i, lse, mask=offs_i < M)
    tl.store(pos_ptr + offs_i, pos, mask=offs_i < M)


@triton.jit
def _dscores(a_ptr, b_ptr, labels_ptr, lse_ptr, coef_ptr, pcoef_ptr, offs_i, offs_j,
             M, N, D, scale, SELF: tl.constexpr, EXCLUDE_POS: tl.constexpr,
             BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_D: tl.constexpr,
             DOT_F32: tl.constexpr):  # fmt: skip
    """The recomputed [BLOCK_I, BLOCK_J] tile of dLoss/dS (tau folded into the coefs)."""
    s = _scores(a_ptr, b_ptr, offs_i, offs_j, M, N, D, scale, BLOCK_I, BLOCK_J, BLOCK_D, DOT_F32)
    positive, denom = _masks(labels_ptr, offs_i, offs_j, M, N, SELF, EXCLUDE_POS)
    in_rows = offs_i < M
    lse = tl.load(lse_ptr + offs_i, mask=in_rows, other=0.0)
    coef = tl.load(coef_ptr + offs_i, mask=in_rows, other=0.0)
    pcoef = tl.load(pcoef_ptr + offs_i, mask=in_rows, other=0.0)
    softmax = tl.where(denom, tl.exp(s - lse[:, None]), 0.0)
    return coef[:, None] * softmax - tl.where(positive, pcoef[:, None], 0.0)


@triton.autotune(**_AUTOTUNE)
@triton.jit
def _row_grad_kernel(a_ptr, b_ptr, labels_ptr, lse_ptr, coef_ptr, pcoef_ptr, out_ptr,
                     M, N, D, scale, SELF: tl.constexpr, EXCLUDE_POS: tl.constexpr,
                     BLOCK_D: tl.constexpr, DOT_F32: tl.constexpr,
                     BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr):  # fmt: skip
    """out[i, chunk] = sum_j dS_ij B[j, chunk] for one row tile and one D chunk."""
    offs_i = tl.program_id(0) * BLOCK_I + tl.arange(0, BLOCK_I)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    acc = tl.zeros((BLOCK_I, BLOCK_D), tl.float32)
    for j0 in range(0, N, BLOCK_J):
        offs_j = j0 + tl.arange(0, BLOCK_J)
        ds = _dscores(a_ptr, b_ptr, labels_ptr, lse_ptr, coef_ptr, pcoef_ptr, offs_i, offs_j,
                      M, N, D, scale, SELF, EXCLUDE_POS, BLOCK_I, BLOCK_J, BLOCK_D,
                      DOT_F32)  # fmt: skip
        mask = (offs_j[:, None] < N) & (offs_d[None, :] < D)
        b = tl.load(
            b_ptr + offs_j.to(tl.int64)[:, None] * D + offs_d[None, :], mask=mask, other=0.0
        )
        if DOT_F32:
            b = b.to(tl.float32)
        acc = tl.dot(ds.to(b.dtype), b, acc, input_precision="ieee")
    mask = (offs_i[:, None] < M) & (offs_d[None, :] < D)
    tl.store(out_ptr + offs_i.to(tl.int64)[:, None] * D + offs_d[None, :], acc, mask=mask)


@triton.autotune(**_AUTOTUNE)
@triton.jit
def _col_grad_kernel(a_ptr, b_ptr, labels_ptr, lse_ptr, coef_ptr, pcoef_ptr, out_ptr,
                     M, N, D, scale, SELF: tl.constexpr, EXCLUDE_POS: tl.constexpr,
                     BLOCK_D: tl.constexpr, DOT_F32: tl.constexpr,
                     BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr):  # fmt: skip
    """out[j, chunk] = sum_i dS_ij A[i, chunk] for one column tile and one D chunk."""
    offs_j = tl.program_id(0) * BLOCK_J + tl.arange(0, BLOCK_J)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    acc = tl.zeros((BLOCK_J, BLOCK_D), tl.float32)
    for i0 in range(0, M, BLOCK_I):
        offs_i = i0 + tl.arange(0, BLOCK_I)
        ds = _dscores(a_ptr, b_ptr, labels_ptr, lse_ptr, coef_ptr, pcoef_ptr, offs_i, offs_j,
                      M, N, D, scale, SELF, EXCLUDE_POS, BLOCK_I, BLOCK_J, BLOCK_D,
                      DOT_F32)  # fmt: skip
        mask = (offs_i[:, None] < M) & (offs_d[None, :] < D)
        a = tl.load(
            a_ptr + offs_i.to(tl.int64)[:, None] * D + offs_d[None, :], mask=mask, other=0.0
        )
        if DOT_F32:
            a = a.to(tl.float32)
        acc = tl.dot(tl.trans(ds).to(a.dtype), a, acc, input_precision="ieee")
    mask = (offs_j[:, None] < N) & (offs_d[None, :] < D)
    tl.store(out_ptr + offs_j.to(tl.int64)[:, None] * D + offs_d[None, :], acc, mask=mask)


# ---------------------------------------------------------------- launchers


def _check_dtype(name: str, t: torch.Tensor) -> None:
    if t.dtype not in _DTYPES:
        raise TypeError(
            f"the triton backend takes {name} in {[str(d) for d in _DTYPES]}, got {t.dtype}"
        )


def _block_d(d: int) -> int:
    return 16 if _INTERPRET else min(128, max(16, triton.next_power_of_2(d)))


def _normalize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(xn fp32, max(||x||, eps) [R, 1] fp32, the dot operand: xn in x's dtype)."""
    x32 = x.float()
    norm = torch.linalg.vector_norm(x32, dim=1, keepdim=True).clamp_min(EPS)  # NaN stays NaN
    xn = x32 / norm
    return xn, norm, xn.to(x.dtype)


def _normalize_backward(xn: torch.Tensor, norm: torch.Tensor, dxn: torch.Tensor) -> torch.Tensor:
    return (dxn - xn * (xn * dxn).sum(1, keepdim=True)) / norm


def _flags(a: torch.Tensor, self_contrast: bool, exclude_positive: bool) -> dict:
    return dict(
        SELF=self_contrast,
        EXCLUDE_POS=exclude_positive,
        BLOCK_D=_block_d(a.shape[1]),
        DOT_F32=_INTERPRET and a.dtype != torch.float32,
    )


def _row_stats(a, b, labels, temperature, self_contrast, exclude_positive):
    """(lse, pos) [M] fp32: the log-sum-exp over each row's denominator and the sum of
    its positive scores."""
    (m, d), n = a.shape, b.shape[0]
    lse = torch.empty(m, dtype=torch.float32, device=a.device)
    pos = torch.empty(m, dtype=torch.float32, device=a.device)
    if m:
        grid = lambda meta: (triton.cdiv(m, meta["BLOCK_I"]),)  # noqa: E731
        flags = _flags(a, self_contrast, exclude_positive)
        _forward_kernel[grid](a, b, labels, lse, pos, m, n, d, 1.0 / temperature, **flags)
    return lse, pos


def _gradients(a, b, labels, lse, coef, pcoef, temperature, self_contrast, exclude_positive):
    """(dA, dB) fp32 for dS_ij = coef_i softmax_ij - pcoef_i [j positive for i]."""
    (m, d), n = a.shape, b.shape[0]
    flags = _flags(a, self_contrast, exclude_positive)
    args = (a, b, labels, lse, coef, pcoef)
    d_chunks = triton.cdiv(d, flags["BLOCK_D"])
    grad_a = torch.zeros(m, d, dtype=torch.float32, device=a.device)
    grad_b = torch.zeros(n, d, dtype=torch.float32, device=a.device)
    if m and n and d:
        row_grid = lambda meta: (triton.cdiv(m, meta["BLOCK_I"]), d_chunks)  # noqa: E731
        col_grid = lambda meta: (triton.cdiv(n, meta["BLOCK_J"]), d_chunks)  # noqa: E731
        _row_grad_kernel[row_grid](*args, grad_a, m, n, d, 1.0 / temperature, **flags)
        _col_grad_kernel[col_grid](*args, grad_b, m, n, d, 1.0 / temperature, **flags)
    return grad_a, grad_b


def _positive_counts(labels: torch.Tensor) -> torch.Tensor:
    """|P(i)| = how many other rows share row i's label, as fp32 (O(B log B), no B x B)."""
    ordered = torch.sort(labels).values
    same = torch.searchsorted(ordered, labels, right=True) - torch.searchsorted(ordered, labels)
    return (same - 1).float()


def _zero_loss(*norms: torch.Tensor) -> torch.Tensor:
    # 0, or NaN when an input holds NaN (the norms keep it), as the reference does.
    return sum(norm.sum() * 0 for norm in norms)


def supcon_forward(
    z: torch.Tensor, labels: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    _check_dtype("z", z)
    _, norm, zop = _normalize(z)
    lse, pos = _row_stats(zop, zop, labels, temperature, True, False)
    n_pos = _positive_counts(labels)
    has_pos = n_pos > 0
    n_rows = has_pos.sum()
    row_loss = torch.where(has_pos, lse - pos / n_pos.clamp_min(1), 0.0)
    loss = torch.where(n_rows > 0, row_loss.sum() / n_rows.clamp_min(1), _zero_loss(norm))
    return loss, lse


def supcon_backward(
    grad_loss: torch.Tensor,
    z: torch.Tensor,
    labels: torch.Tensor,
    lse: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    _check_dtype("z", z)
    zn, norm, zop = _normalize(z)
    n_pos = _positive_counts(labels)
    has_pos = (n_pos > 0).float()
    # d loss / d S_ij = (grad / rows) * (softmax_ij - [j in P(i)] / |P(i)|) on rows with a
    # positive; 1/tau (dS/dzn) is folded in. S is symmetric: zn gets both passes.
    coef = grad_loss.float() * has_pos / (has_pos.sum().clamp_min(1) * temperature)
    pcoef = coef / n_pos.clamp_min(1)
    grad_rows, grad_cols = _gradients(zop, zop, labels, lse, coef, pcoef, temperature, True, False)
    return _normalize_backward(zn, norm, grad_rows + grad_cols).to(z.dtype)


def prototype_forward(
    z: torch.Tensor,
    prototypes: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    exclude_positive: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    _check_dtype("z", z)
    _check_dtype("prototypes", prototypes)
    _, z_norm, zop = _normalize(z)
    _, p_norm, pop = _normalize(prototypes)
    lse, pos = _row_stats(zop, pop, labels, temperature, False, exclude_positive)
    if exclude_positive and prototypes.shape[0] == 1:  # nothing to contrast with
        return _zero_loss(z_norm, p_norm), lse
    return (lse - pos).sum() / max(z.shape[0], 1), lse  # an empty batch: 0


def prototype_backward(
    grad_loss: torch.Tensor,
    z: torch.Tensor,
    prototypes: torch.Tensor,
    labels: torch.Tensor,
    lse: torch.Tensor,
    temperature: float,
    exclude_positive: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    _check_dtype("z", z)
    _check_dtype("prototypes", prototypes)
    if exclude_positive and prototypes.shape[0] == 1:
        return torch.zeros_like(z), torch.zeros_like(prototypes)
    zn, z_norm, zop = _normalize(z)
    pn, p_norm, pop = _normalize(prototypes)
    # d loss / d S_ik = (grad / B) * (softmax_ik - [k == y_i]); 1/tau folded in.
    coef = (grad_loss.float() / (z.shape[0] * temperature)).expand(z.shape[0]).contiguous()
    grad_zn, grad_pn = _gradients(
        zop, pop, labels, lse, coef, coef, temperature, False, exclude_positive
    )
    return (
        _normalize_backward(zn, z_norm, grad_zn).to(z.dtype),
        _normalize_backward(pn, p_norm, grad_pn).to(prototypes.dtype),
    )

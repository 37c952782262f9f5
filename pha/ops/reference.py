"""Eager PyTorch ground truth for every pha op.

These functions are deliberately plain: every other backend is tested against them, and
the `reference` backend runs them directly (autograd comes from PyTorch). They compute
in the dtype they are given, so that a bf16 call is also the "same-precision torch
reference" of FlashAttention's tolerance rule.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ACTIVATIONS = ("relu", "gelu", "silu", "identity")


def activate(h: torch.Tensor, activation: str) -> torch.Tensor:
    """The adapter non-linearity; "gelu" is the tanh approximation (as in T5/HyperFormer)."""
    if activation == "relu":
        return torch.relu(h)
    if activation == "gelu":
        return F.gelu(h, approximate="tanh")
    if activation == "silu":
        return F.silu(h)
    if activation == "identity":
        return h
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


def hyper_adapter(
    x: torch.Tensor,
    w_down: torch.Tensor,
    b_down: torch.Tensor,
    w_up: torch.Tensor,
    b_up: torch.Tensor,
    index: torch.Tensor | None = None,
    activation: str = "relu",
) -> torch.Tensor:
    """act(x @ w_down[g] + b_down[g]) @ w_up[g] + b_up[g] with g = index[b] (or b)."""
    if index is not None:
        # The eager formulation copies each instance's weight set (what the PHA release does).
        w_down, b_down, w_up, b_up = w_down[index], b_down[index], w_up[index], b_up[index]
    h = activate(torch.baddbmm(b_down.unsqueeze(1), x, w_down), activation)
    return torch.baddbmm(b_up.unsqueeze(1), h, w_up)


def _zero_loss(*tensors: torch.Tensor) -> torch.Tensor:
    # A zero that still depends on the inputs: zero gradient, and NaN inputs stay visible.
    return sum(
        (t.sum() * 0 for t in tensors),
        torch.zeros((), dtype=tensors[0].dtype, device=tensors[0].device),
    )


def supcon_loss(z: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """L_ins, the supervised contrastive loss over a batch, written with B x B masks as in
    the PHA release. Rows without a positive are left out of the mean; with none at all
    the loss is 0 with zero gradient."""
    z = F.normalize(z, dim=-1)
    n = z.shape[0]
    sim = z @ z.T / temperature
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    n_pos = positives.sum(1)
    has_pos = n_pos > 0
    compiling = torch.compiler.is_compiling()
    if not compiling and not bool(has_pos.any()):
        return _zero_loss(z)
    log_norm = torch.logsumexp(sim.masked_fill(self_mask, float("-inf")), dim=1, keepdim=True)
    log_prob = torch.where(positives, sim - log_norm, torch.zeros_like(sim))
    if compiling:  # the same mean without the data-dependent branch and row selection,
        # which would break the graph (and then every PHAModel.forward graph in the process)
        per_row = log_prob.sum(1) / n_pos.clamp_min(1)
        return -(per_row * has_pos).sum() / has_pos.sum().clamp_min(1)
    mean_log_prob_pos = log_prob.sum(1)[has_pos] / n_pos[has_pos]
    return -mean_log_prob_pos.mean()


def prototype_loss(
    z: torch.Tensor,
    prototypes: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 0.1,
    exclude_positive: bool = True,
) -> torch.Tensor:
    """L_pro, instance-to-prototype contrast. exclude_positive=True is the PHA release's
    form (the positive is left out of the denominator); False is standard InfoNCE. With a
    single prototype and exclude_positive there is nothing to contrast, and an empty batch
    has nothing to average: 0, zero gradient (as supcon_loss without positives)."""
    z = F.normalize(z, dim=-1)
    p = F.normalize(prototypes, dim=-1)
    if z.shape[0] == 0 or (exclude_positive and p.shape[0] == 1):
        return _zero_loss(z, prototypes)
    sim = z @ p.T / temperature
    positive = sim.gather(1, labels[:, None]).squeeze(1)
    if exclude_positive:
        is_pos = F.one_hot(labels, p.shape[0]).bool()
        sim = sim.masked_fill(is_pos, float("-inf"))
    return (torch.logsumexp(sim, dim=1) - positive).mean()

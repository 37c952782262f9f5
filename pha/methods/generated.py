"""Applying generated adapter weights inside the backbone (shared by the hyper-methods)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .. import ops
from ..modules import Adapter, HyperNetwork
from ..ops.hyper_adapter import compute_dtype as hyper_adapter_dtype
from ..peft_model import PHAModel
from .base import expand_rows

ADAPTER_TENSORS = ("w_down", "b_down", "w_up", "b_up")


def adapter_shapes(d: int, r: int) -> dict[str, tuple[int, ...]]:
    """The shapes a hypernetwork generates for one adapter (x @ w_down, h @ w_up)."""
    return {"w_down": (d, r), "b_down": (r,), "w_up": (r, d), "b_up": (d,)}


def tasks_in_batch(task_ids: torch.Tensor, num_tasks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(tasks, index): the task ids whose weights a batch needs, each generated once, and
    each instance's position in `tasks`. Eagerly the distinct ids (torch.unique); under
    torch.compile every task, index = task_ids: unique's data-dependent output shape would
    break the graph, and the weights of absent tasks get no gradient either way."""
    if torch.compiler.is_compiling():
        return torch.arange(num_tasks, device=task_ids.device), task_ids
    return torch.unique(task_ids, return_inverse=True)


def per_site(weights: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, ...]]:
    """Generated tensors [sites, G, ...] as one view per site (`unbind`), for the adapters
    to take theirs by `[site]` as from the stacked tensor. Indexing the stacked tensor
    would cost, in the backward pass, a zero-filled gradient of the whole stack per site
    and their sum; unbind's backward stacks the sites' gradients once (the same values:
    2 ms of PHA's bf16 step, which reads 3 sites of two [8, 384, 64] tensors)."""
    return {name: tensor.unbind(0) for name, tensor in weights.items()}


def apply_generated_adapter(
    x: torch.Tensor,
    weights: dict[str, torch.Tensor | Sequence[torch.Tensor]] | None,
    site: int,
    index: torch.Tensor | None,
    activation: str,
    backend: str | None,
) -> torch.Tensor:
    """The adapter of `site` on x [n, T, d]. weights: name -> [sites, G, ...] (stacked, or
    per_site's views); index [B] into G, or None for one set per instance (G == B). When
    generation expanded the batch (n a multiple of B), the index (or the per-instance sets)
    is repeated to match."""
    if weights is None:
        raise RuntimeError("a generated adapter ran before its weights were generated")
    n = x.shape[0]
    # In the op's dtype, not x's: under autocast an fp32 x meets weights generated in bf16,
    # and casting them to fp32 would only be undone inside the op (both ways, every step).
    dtype = hyper_adapter_dtype(x)
    w = [weights[k][site].to(dtype) for k in ADAPTER_TENSORS]
    if index is None:
        w = [expand_rows(t, n) for t in w]
    else:
        index = expand_rows(index, n)
    return ops.hyper_adapter(x, *w, index=index, activation=activation, backend=backend)


def attach_shared_lower_adapters(model: PHAModel) -> nn.ModuleList:
    """The lower half of PHA / HyperDecoders: one ordinary adapter per layer, shared by all
    tasks, parallel to the FFN."""
    cfg, bb = model.method_config, model.backbone
    adapters = nn.ModuleList(
        Adapter(
            bb.d_model,
            cfg.adapter_dim,
            activation="relu",
            init_gain=cfg.lower_init_gain,
            backend=cfg.backend,
        )
        for _ in bb.lower
    )
    for layer, adapter in zip(bb.lower, adapters):
        bb.add_parallel_adapter(layer, adapter)
    return adapters


def upper_adapter_hypernet(
    model: PHAModel, cond_dim: int, site_embed_dim: int, per_site: bool = False
) -> HyperNetwork:
    """The hypernetwork of PHA / HyperDecoders: one adapter per upper-half layer from
    [cond ; layer embedding], hyperfan-in initialised."""
    cfg, bb = model.method_config, model.backbone
    return HyperNetwork(
        cond_dim=cond_dim,
        shapes=adapter_shapes(bb.d_model, cfg.adapter_dim),
        site_sizes=(len(bb.upper),),
        site_embed_dim=site_embed_dim,
        hidden_dim=cfg.hypernet_hidden_dim,
        out_dim=cfg.hypernet_out_dim,
        per_site=per_site,
        init="hyperfanin",
    )


def attach_generated_upper_adapters(model: PHAModel) -> None:
    """The upper half: each layer's parallel ReLU adapter takes the weights (and index, None
    for one set per instance) that the call's context holds."""

    def adapter(site: int):
        def fn(x: torch.Tensor) -> torch.Tensor:
            ctx = model.ctx()
            return apply_generated_adapter(
                x, ctx.weights, site, ctx.index, "relu", model.method_config.backend
            )

        return fn

    for site, layer in enumerate(model.backbone.upper):
        model.backbone.add_parallel_adapter(layer, adapter(site))

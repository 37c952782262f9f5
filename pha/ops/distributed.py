"""Gathering a batch from every rank, with gradient, so that the contrastive losses see
the global batch under DistributedDataParallel.

Gradient convention: every rank computes the same loss L on the gathered batch, and the
backward of the gather *sums* each chunk's gradient over ranks, so rank r holds
world_size * dL/dz_r. DDP then averages parameter gradients over ranks, which gives
exactly the gradient of the global loss: (1/W) sum_r W dL/dz_r dz_r/dtheta = dL/dtheta.
(A gather that only passed back the local gradient would be too small by a factor
world_size after DDP's averaging.) Parameters the loss uses directly (the prototypes) are
not gathered: each rank already has the full dL/dP, and DDP's average keeps it.

Ranks may hold different numbers of rows (a smaller last batch): the sizes are gathered
first, and the chunks padded to the largest for the collective.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def _gather_sizes(tensor: torch.Tensor) -> list[int]:
    size = torch.tensor([tensor.shape[0]], dtype=torch.long, device=tensor.device)
    sizes = size.new_empty(dist.get_world_size())
    dist.all_gather_into_tensor(sizes, size)
    return sizes.tolist()


def _gather(tensor: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """The rows of every rank, concatenated in rank order."""
    world, most = len(sizes), max(sizes)
    rest = tensor.shape[1:]
    if tensor.shape[0] < most:
        padded = tensor.new_zeros((most, *rest))
        padded[: tensor.shape[0]] = tensor
        tensor = padded
    out = tensor.new_empty((world * most, *rest))
    dist.all_gather_into_tensor(out, tensor.contiguous())
    if min(sizes) == most:
        return out
    return torch.cat([out[r * most : r * most + n] for r, n in enumerate(sizes)])


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        rank = dist.get_rank()
        ctx.start, ctx.rows = sum(sizes[:rank]), sizes[rank]
        return _gather(tensor, sizes)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        # A copy: all_reduce works in place, and autograd may still hold `grad`.
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.start : ctx.start + ctx.rows], None


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` from all ranks along dim 0 (rank order); identity when not
    distributed. Ranks may pass different numbers of rows (same trailing shape and dtype).
    Integer tensors (labels) are gathered without autograd."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    sizes = _gather_sizes(tensor)
    if tensor.dtype.is_floating_point:
        return _AllGather.apply(tensor, sizes)
    return _gather(tensor, sizes)

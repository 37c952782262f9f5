"""Gathering a batch from every rank, with gradient, so that the contrastive losses see
the global batch under DistributedDataParallel.

Gradient convention: every rank computes the same loss on the gathered batch, and the
backward of the gather *sums* each chunk's gradient over ranks, so rank r holds
world_size * dL/dz_r. DDP then averages parameter gradients over ranks, which gives
exactly the gradient of the global loss. (A gather that only passed back the local
gradient would be too small by a factor world_size after DDP's averaging.)
"""

from __future__ import annotations

import torch
import torch.distributed as dist


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        world = dist.get_world_size()
        ctx.rank, ctx.rows = dist.get_rank(), tensor.shape[0]
        out = tensor.new_empty((world * tensor.shape[0], *tensor.shape[1:]))
        dist.all_gather_into_tensor(out, tensor.contiguous())
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` from all ranks along dim 0 (rank order); identity when not
    distributed. Every rank must pass the same shape. Integer tensors (labels) are gathered
    without autograd."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    if tensor.dtype.is_floating_point:
        return _AllGather.apply(tensor)
    out = tensor.new_empty((dist.get_world_size() * tensor.shape[0], *tensor.shape[1:]))
    dist.all_gather_into_tensor(out, tensor.contiguous())
    return out

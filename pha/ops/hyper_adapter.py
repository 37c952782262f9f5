"""pha.ops.hyper_adapter: an adapter whose weights differ per instance or per task.

The non-reference backends run behind two torch.library custom ops, so autograd,
torch.compile(fullgraph=True) and opcheck all see one opaque, well-described op:
  pha::hyper_adapter_fwd -> (out, hidden)   hidden = the fp32 pre-activation [B, T, r],
                                             kept for backward (small: r << d)
  pha::hyper_adapter_bwd -> (dx, dw_down, db_down, dw_up, db_up)
Each backend module provides hyper_adapter_forward / hyper_adapter_backward with these
signatures (torch.ops.pha_C for the C++ and CUDA kernels, pha.kernels for Triton).
Plain eager calls skip the custom ops' Python dispatch (torch.library's autograd wrapper
costs about 0.15 ms per forward+backward on CPU, more than the kernels of a small adapter)
and run the same launches through an autograd.Function (_EagerHyperAdapter); whatever
needs to see the op itself (torch.compile, dispatch modes such as FakeTensorMode or
FlopCounterMode, functorch transforms, tensor subclasses) gets the custom ops.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.utils._python_dispatch import _get_current_dispatch_mode
from torch.utils.flop_counter import register_flop_formula

from . import _backend, _checks, reference
from .reference import ACTIVATIONS

_OP = "hyper_adapter"
_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


@torch.library.custom_op("pha::hyper_adapter_fwd", mutates_args=())
def _forward(
    x: torch.Tensor,
    w_down: torch.Tensor,
    b_down: torch.Tensor,
    w_up: torch.Tensor,
    b_up: torch.Tensor,
    index: torch.Tensor | None,
    activation: str,
    backend: str,
    save_hidden: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    launch = _backend.module(backend).hyper_adapter_forward
    return launch(x, w_down, b_down, w_up, b_up, index, activation, save_hidden)


@_forward.register_fake
def _(x, w_down, b_down, w_up, b_up, index, activation, backend, save_hidden):
    n, t, _ = x.shape
    hidden_shape = (n, t, w_down.shape[2]) if save_hidden else (0,)
    return torch.empty_like(x), x.new_empty(hidden_shape, dtype=torch.float32)


@torch.library.custom_op("pha::hyper_adapter_bwd", mutates_args=())
def _backward(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    w_down: torch.Tensor,
    w_up: torch.Tensor,
    hidden: torch.Tensor,
    index: torch.Tensor | None,
    activation: str,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    launch = _backend.module(backend).hyper_adapter_backward
    return launch(grad_out, x, w_down, w_up, hidden, index, activation)


@_backward.register_fake
def _(grad_out, x, w_down, w_up, hidden, index, activation, backend):
    g, d, r = w_down.shape
    return (
        torch.empty_like(x),
        torch.empty_like(w_down),
        w_down.new_empty((g, r)),
        torch.empty_like(w_up),
        w_up.new_empty((g, d)),
    )


def _save(ctx, x, w_down, w_up, hidden, index, activation, backend) -> None:
    ctx.save_for_backward(x, w_down, w_up, hidden, index)
    ctx.activation, ctx.backend = activation, backend


def _setup_context(ctx, inputs, output):
    x, w_down, _, w_up, _, index, activation, backend, _ = inputs
    _save(ctx, x, w_down, w_up, output[1], index, activation, backend)


def _backward_args(ctx, grad_out) -> tuple:
    """The arguments of a backend's hyper_adapter_backward, from what forward saved."""
    x, w_down, w_up, hidden, index = ctx.saved_tensors
    return grad_out.contiguous(), x, w_down, w_up, hidden, index, ctx.activation


def _autograd_backward(ctx, grad_out, _grad_hidden):
    grads = _backward(*_backward_args(ctx, grad_out), ctx.backend)
    return (*grads, None, None, None, None)


_forward.register_autograd(_autograd_backward, setup_context=_setup_context)


class _EagerHyperAdapter(torch.autograd.Function):
    """The custom ops' launches and autograd rule, without their dispatch (eager only)."""

    @staticmethod
    def forward(ctx, x, w_down, b_down, w_up, b_up, index, activation, backend, save_hidden):
        launch = _backend.module(backend).hyper_adapter_forward
        out, hidden = launch(x, w_down, b_down, w_up, b_up, index, activation, save_hidden)
        _save(ctx, x, w_down, w_up, hidden, index, activation, backend)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        grads = _backend.module(ctx.backend).hyper_adapter_backward(*_backward_args(ctx, grad_out))
        return (*grads, None, None, None, None)


def _needs_custom_op(tensors: tuple[torch.Tensor, ...]) -> bool:
    """Whether this call must go through the registered custom ops: while torch.compile
    traces, under a dispatch mode (FakeTensorMode, FlopCounterMode, ...) or a functorch
    transform, or for tensor subclasses, which only the custom ops describe."""
    return (
        torch.compiler.is_compiling()
        or _get_current_dispatch_mode() is not None
        or torch._C._are_functorch_transforms_active()
        or any(type(t) not in (torch.Tensor, nn.Parameter) for t in tensors)
    )


# torch.utils.flop_counter sees the fused ops as opaque: give it their GEMM FLOPs (2 per
# multiply-add), so that a model's FLOP count is the same on every backend.
@register_flop_formula(torch.ops.pha.hyper_adapter_fwd)
def _forward_flops(x_shape, w_down_shape, *args, out_shape=None, **kwargs) -> int:
    n, t, d = x_shape
    return 4 * n * t * d * w_down_shape[2]  # x @ w_down, then hidden @ w_up


@register_flop_formula(torch.ops.pha.hyper_adapter_bwd)
def _backward_flops(grad_out_shape, x_shape, w_down_shape, *args, out_shape=None, **kwargs) -> int:
    n, t, d = x_shape
    return 8 * n * t * d * w_down_shape[2]  # d_hidden, dx, dw_up, dw_down


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype hyper_adapter runs in for activations x: under autocast an fp32 x is
    cast to the autocast dtype, otherwise x's own. Weights already in it need no cast."""
    if x.dtype == torch.float32 and torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def _autocast(tensors: tuple) -> tuple:
    """Under autocast, the fp32 inputs in the autocast dtype, as torch.matmul would take
    them (a bf16 activation meets fp32 master weights in mixed-precision training); the
    casts are differentiable, so the weights' gradients arrive in fp32."""
    x = tensors[0]
    if not isinstance(x, torch.Tensor) or not torch.is_autocast_enabled(x.device.type):
        return tensors
    dtype = torch.get_autocast_dtype(x.device.type)
    return tuple(
        t.to(dtype) if isinstance(t, torch.Tensor) and t.dtype == torch.float32 else t
        for t in tensors
    )


def _validate(x, w_down, b_down, w_up, b_up, index, activation):
    for name, t in (
        ("x", x),
        ("w_down", w_down),
        ("b_down", b_down),
        ("w_up", w_up),
        ("b_up", b_up),
    ):
        _checks.floating(name, t, _DTYPES)
    _checks.same_dtype({"x": x, "w_down": w_down, "b_down": b_down, "w_up": w_up, "b_up": b_up})
    tensors = {"x": x, "w_down": w_down, "b_down": b_down, "w_up": w_up, "b_up": b_up}
    if index is not None:
        tensors["index"] = index
    _checks.same_device(tensors)
    _checks.shape("x", x, (None, None, None), "[B, T, d]")
    n, _, d = x.shape
    _checks.shape("w_down", w_down, (None, d, None), f"[G, d={d}, r]")
    g, _, r = w_down.shape
    _checks.shape("b_down", b_down, (g, r), f"[G={g}, r={r}]")
    _checks.shape("w_up", w_up, (g, r, d), f"[G={g}, r={r}, d={d}]")
    _checks.shape("b_up", b_up, (g, d), f"[G={g}, d={d}]")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if index is None:
        if g != n:
            raise ValueError(
                f"without index there is one weight set per instance: w_down.shape[0] (G={g}) "
                f"must equal x.shape[0] (B={n}); pass index=LongTensor[B] to share sets"
            )
        return None
    return _checks.index_tensor("index", index, n, g, "one weight-set id per instance of x")


def hyper_adapter(
    x: torch.Tensor,
    w_down: torch.Tensor,
    b_down: torch.Tensor,
    w_up: torch.Tensor,
    b_up: torch.Tensor,
    index: torch.Tensor | None = None,
    activation: str = "relu",
    backend: str | None = None,
) -> torch.Tensor:
    """act(x @ w_down[g] + b_down[g]) @ w_up[g] + b_up[g] for every instance b, g = index[b] or b.

    Args:
        x: [B, T, d] activations.
        w_down, b_down, w_up, b_up: [G, d, r], [G, r], [G, r, d], [G, d] weight sets.
        index: None (G == B, one set per instance) or an integer tensor [B] in [0, G):
            instances sharing a set share its weights (and sum into its gradient).
        activation: "relu", "gelu" (tanh form), "silu" or "identity".
        backend: "reference", "cpp", "triton", "cuda", or None for the fastest available.
    Returns:
        [B, T, d], the dtype of x (under autocast, fp32 inputs are first cast to the
        autocast dtype).
    """
    x, w_down, b_down, w_up, b_up = _autocast((x, w_down, b_down, w_up, b_up))
    index = _validate(x, w_down, b_down, w_up, b_up, index, activation)
    name = _backend.resolve(backend, x.device, _OP, x.dtype)
    if name == "reference":
        return reference.hyper_adapter(x, w_down, b_down, w_up, b_up, index, activation)
    weights = (w_down, b_down, w_up, b_up)
    save_hidden = torch.is_grad_enabled() and any(t.requires_grad for t in (x, *weights))
    args = (*(t.contiguous() for t in (x, *weights)), index, activation, name, save_hidden)
    if _needs_custom_op((x, *weights)):
        return _forward(*args)[0]
    return _EagerHyperAdapter.apply(*args)

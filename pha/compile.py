"""torch.compile of a pha model (pha.train --compile), with cheaper dropout masks on CPU.

Inductor's CPU code draws each dropout mask element from its own Philox call, scalar
(torch/csrc/inductor/cpp_prefix.h: normalized_rand_cpu), and hoists all of a step's
masks into one kernel: on a MiniLM train step it cost more than the eager step's
`bernoulli_` (355 vs 150 ms of a 1.1 s step, one thread), which made the compiled step
slower than eager. On CPU, compile_model therefore keeps each `aten.native_dropout` whole
through tracing (inductor's `fallback_random`) and then replaces it by an opaque
`pha::dropout_mask` op, whose masks follow torch's generator (on CPU: one seed drawn from
it, every element from the C++ kernel, 16 per AVX-512 step and thread-parallel), plus the
multiply by mask / (1 - p), which inductor fuses into the neighbouring kernels. Eager
execution is untouched.
"""

from __future__ import annotations

import functools
import logging
import operator

import torch
from torch import nn
from torch._inductor.custom_graph_pass import CustomGraphPass, get_hash_for_files

from pha.ops import _backend

logger = logging.getLogger(__name__)

aten = torch.ops.aten
_U31 = 2**31  # each 63-bit draw of random_() gives two uniform 31-bit integers


@functools.cache
def _cpp_mask_kernel() -> bool:
    """pha._C loads and registers pha_C.dropout_mask (an editable install whose C++ was
    built before the kernel existed does not: it keeps random_(), and says so once)."""
    if not _backend.backends()["cpp"]:
        return False
    if hasattr(torch.ops.pha_C, "dropout_mask"):
        return True
    logger.warning(
        "pha._C has no dropout_mask kernel (built before it existed): dropout masks use "
        "random_(); rebuild with `pip install --no-build-isolation -e .`"
    )
    return False


@torch.library.custom_op(
    "pha::dropout_mask", mutates_args=(), tags=(torch.Tag.nondeterministic_seeded,)
)
def dropout_mask(x: torch.Tensor, p: float) -> torch.Tensor:
    """A bool tensor of x's shape (contiguous, on x's device): True (keep) with probability
    1 - p, following torch's random generator (the same seed gives the same mask). A mask
    element is dropped when a 31-bit uniform integer falls below round(p * 2**31) (32-bit
    and 2**32 in the C++ kernel): the drop probability is p to within 2**-32."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p: expected a probability in (0, 1), got {p}")
    if x.device.type == "cpu" and _cpp_mask_kernel():
        # One 63-bit seed from torch's generator; the kernel derives each element from it
        # and its index (SplitMix64), dropping it when a 32-bit uniform < round(p * 2**32).
        seed = int(torch.empty((), dtype=torch.int64).random_())
        return torch.ops.pha_C.dropout_mask(x, p, seed)
    n = x.numel()
    # random_() on int64 draws from [0, 2**63): the low 32 bits of each draw are uniform,
    # the high 32 bits uniform in [0, 2**31); masking bit 31 leaves two 31-bit uniforms.
    draws = torch.empty((n + 1) // 2, dtype=torch.int64, device=x.device).random_()
    u31 = draws.view(torch.int32)[:n].bitwise_and_(_U31 - 1)
    return torch.ge(u31, round(p * _U31)).view(x.shape)


@dropout_mask.register_fake
def _(x: torch.Tensor, p: float) -> torch.Tensor:
    return x.new_empty(x.shape, dtype=torch.bool)


class _DropoutMasksFromTorch(CustomGraphPass):
    """Post-grad pass: each training `native_dropout(x, p)` (kept whole by fallback_random)
    becomes (x * dropout_mask(x, p) * 1 / (1 - p), the mask). The backward graph already
    reads the mask from the forward's outputs, so it scales by the same mask."""

    def __call__(self, graph: torch.fx.Graph) -> None:
        from torch._guards import detect_fake_mode

        for node in list(graph.nodes):
            if node.op != "call_function" or node.target is not aten.native_dropout.default:
                continue
            x, p, train = node.args
            if not train or not 0.0 < p < 1.0:
                continue
            with graph.inserting_before(node):
                mask = graph.call_function(torch.ops.pha.dropout_mask.default, (x, p))
                kept = graph.call_function(aten.mul.Tensor, (x, mask))
                out = graph.call_function(aten.mul.Tensor, (kept, 1.0 / (1.0 - p)))
            with detect_fake_mode([x.meta["val"]]):  # what inductor reads of each node
                mask.meta["val"] = dropout_mask(x.meta["val"], p)
                kept.meta["val"] = x.meta["val"] * mask.meta["val"]
                out.meta["val"] = kept.meta["val"] * (1.0 / (1.0 - p))
            for user in list(node.users):  # native_dropout's outputs are read by getitem
                if user.target is not operator.getitem:
                    raise RuntimeError(f"unexpected use of native_dropout: {user.format_node()}")
                user.replace_all_uses_with(out if user.args[1] == 0 else mask)
                graph.erase_node(user)
            graph.erase_node(node)

    def uuid(self) -> bytes:  # inductor's graph cache key: this file's contents
        return get_hash_for_files((__file__,))


def compile_options(device: torch.device) -> dict[str, object]:
    """The inductor options compile_model uses on `device` (none off the CPU: inductor's
    GPU dropout is fused and fast)."""
    if torch.device(device).type != "cpu":
        return {}
    return {"fallback_random": True, "post_grad_custom_pre_pass": _DropoutMasksFromTorch()}


def compile_model(model: nn.Module, device: torch.device | str = "cpu") -> nn.Module:
    """torch.compile(model) as pha.train --compile runs it on `device`."""
    return torch.compile(model, options=compile_options(torch.device(device)) or None)

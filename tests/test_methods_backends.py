"""The config's backend reaches the ops: the reference and C++ backends give the same
loss and gradients through whole models."""

from __future__ import annotations

import pytest
import torch
from backend_utils import require
from method_utils import make_config, one_thread, scramble  # noqa: F401  (autouse fixture)
from tiny_backbones import batch, tiny

import pha

TASK_IDS = torch.tensor([0, 1, 2, 1, 0, 2])
OPS = {"pha": ("hyper_adapter", "supcon", "prototype")}


def loss_and_grads(method, family, backend):
    model = pha.get_model(tiny(family), make_config(method, family, backend=backend))
    scramble(model)
    ids, mask, labels = batch(family)
    out = model(ids, mask, labels=labels, task_ids=TASK_IDS)
    out.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    return out.loss.detach(), out.aux_losses, grads


@pytest.mark.parametrize("family", ["t5", "bert", "llama"])
@pytest.mark.parametrize("method", ["pha", "hyperformer", "hyperdecoder", "adapter_per_task"])
def test_cpp_backend_matches_reference_through_the_model(method, family):
    for op in OPS.get(method, ("hyper_adapter",)):
        require("cpp", op)
    ref_loss, ref_aux, ref_grads = loss_and_grads(method, family, "reference")
    loss, aux, grads = loss_and_grads(method, family, "cpp")
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    for name in ref_aux:
        torch.testing.assert_close(aux[name], ref_aux[name], rtol=1e-5, atol=1e-6)
    assert grads.keys() == ref_grads.keys()
    for name, g in ref_grads.items():
        torch.testing.assert_close(grads[name], g, rtol=1e-4, atol=1e-6, msg=name)


def test_config_backend_reaches_the_ops():
    model = pha.get_model(tiny("bert"), make_config("pha", "bert", backend="cuda"))
    ids, mask, labels = batch("bert")
    with pytest.raises((RuntimeError, ValueError), match="backend 'cuda'"):
        model(ids, mask, labels=labels, task_ids=TASK_IDS)

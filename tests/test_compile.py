"""torch.compile of a pha model (pha.train --compile): no graph break comes from pha's own
code, and the compiled forward and backward agree with eager."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_backbones import VOCAB, tiny

import pha

PHA_DIR = str(Path(pha.__file__).resolve().parent)
TASKS = ["a", "b", "c"]
CONFIGS = {
    "adapter": pha.AdapterConfig,
    "pha": pha.PHAConfig,
    "hyperformer": pha.HyperFormerConfig,
}


def _model_and_batch(method: str):
    model = pha.get_model(tiny("bert"), CONFIGS[method](tasks=TASKS, num_labels=[2, 3, 2]))
    g = torch.Generator().manual_seed(0)
    batch = dict(
        input_ids=torch.randint(5, VOCAB, (6, 7), generator=g),
        attention_mask=torch.ones(6, 7, dtype=torch.long),
        task_ids=torch.tensor([2, 0, 2, 2, 0, 0]),  # task 1 absent
        labels=torch.tensor([1, 0, 0, 1, 1, 0]),
    )
    return model.train(), batch


@pytest.mark.parametrize("method", list(CONFIGS))
def test_no_graph_break_in_pha_code(method):
    model, batch = _model_and_batch(method)
    explained = torch._dynamo.explain(model)(**batch)
    ours = [
        f"{reason.reason.splitlines()[0]} at {frame.filename}:{frame.lineno}"
        for reason in explained.break_reasons
        for frame in reason.user_stack
        if frame.filename.startswith(PHA_DIR)
    ]
    assert not ours, "\n".join(ours)


@pytest.mark.parametrize("method", list(CONFIGS))
def test_compiled_step_matches_eager(method):
    """The compiled model generates every task's weights and runs every head on every row
    (graph-safe shapes); loss, logits and gradients must still be eager's."""
    model, batch = _model_and_batch(method)
    eager = model(**batch)
    eager.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    compiled = torch.compile(model, backend="aot_eager")(**batch)
    compiled.loss.backward()
    torch.testing.assert_close(compiled.loss, eager.loss)
    torch.testing.assert_close(compiled.logits, eager.logits)
    for name, p in model.named_parameters():
        if name in grads:
            torch.testing.assert_close(p.grad, grads[name], msg=name, atol=1e-6, rtol=1e-5)

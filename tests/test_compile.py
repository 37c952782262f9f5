"""torch.compile of a pha model (pha.train --compile): no graph break comes from pha's own
code, and the compiled forward and backward agree with eager."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from tiny_backbones import VOCAB, tiny

import pha
import pha.compile as compile_
from pha.ops import _backend

PHA_DIR = str(Path(pha.__file__).resolve().parent)
TASKS = ["a", "b", "c"]
CONFIGS = {
    "adapter": pha.AdapterConfig,
    "pha": pha.PHAConfig,
    "hyperformer": pha.HyperFormerConfig,
    # PHA as the release computes it (bench_train_step's "release"): eager reference ops
    "release": functools.partial(pha.PHAConfig, backend="reference"),
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
    """A break anywhere in PHAModel.forward makes dynamo trace that code object's nested
    frames one by one from then on, for every model in the process (bench_train_step
    compiles three): the release's reference losses used to break it."""
    model, batch = _model_and_batch(method)
    explained = torch._dynamo.explain(model)(**batch)
    assert explained.graph_count == 1
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


def test_dropout_mask_keeps_one_minus_p_and_follows_the_seed():
    x = torch.empty(3, 50_001)  # odd size: the last 63-bit draw gives one element
    torch.manual_seed(1)
    mask = torch.ops.pha.dropout_mask(x, 0.3)
    assert mask.dtype == torch.bool and mask.shape == x.shape
    keep = mask.float().mean().item()
    assert abs(keep - 0.7) < 0.005  # 150k draws: 7 standard deviations
    torch.manual_seed(1)
    assert torch.equal(torch.ops.pha.dropout_mask(x, 0.3), mask)
    assert not torch.equal(torch.ops.pha.dropout_mask(x, 0.3), mask)
    for p in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="p: expected a probability"):
            compile_.dropout_mask(x, p)


def test_cpu_dropout_mask_is_the_cpp_kernels_on_every_path_and_thread_count(monkeypatch):
    """On CPU the mask comes from pha_C.dropout_mask with a seed drawn from torch's
    generator; the AVX-512 and portable kernels and any thread count give the same bits."""
    if not _backend.backends()["cpp"]:
        pytest.skip("the C++ extension is not built")
    x = torch.empty(7, 4099)  # not a multiple of the 16-element vector step
    torch.manual_seed(5)
    mask = torch.ops.pha.dropout_mask(x, 0.25)
    torch.manual_seed(5)
    seed = int(torch.empty((), dtype=torch.int64).random_())
    threads = torch.get_num_threads()
    try:
        for path in pha.ops.cpu_isa_paths():
            monkeypatch.setenv("PHA_CPU_ISA", path)
            for n in (1, 2):
                torch.set_num_threads(n)
                assert torch.equal(torch.ops.pha_C.dropout_mask(x, 0.25, seed), mask), (path, n)
    finally:
        torch.set_num_threads(threads)
    assert abs(mask.float().mean().item() - 0.75) < 0.015  # 28.7k draws: 5 standard deviations
    with pytest.raises(ValueError, match="p must lie in"):
        torch.ops.pha_C.dropout_mask(x, 1.0, seed)


def _dropout_sum(x, w):
    return (torch.nn.functional.dropout(x, 0.25, training=True) * w).sum()


def test_compiled_dropout_uses_pha_masks_and_the_same_mask_in_backward():
    """Inductor keeps native_dropout whole and the pass swaps in pha::dropout_mask: the
    output is x / (1 - p) or 0, and the gradient is scaled by the very same mask."""
    x = torch.rand(64, 129) + 0.5
    w = torch.randn(64, 129)
    x.requires_grad_(True)
    fn = torch.compile(_dropout_sum, options=compile_.compile_options(torch.device("cpu")))
    with torch.profiler.profile() as prof:
        loss = fn(x, w)
    assert "pha::dropout_mask" in {e.name for e in prof.events()}
    loss.backward()
    kept = x.grad != 0
    torch.testing.assert_close(x.grad, torch.where(kept, w / 0.75, 0.0))
    torch.testing.assert_close(loss, (torch.where(kept, x / 0.75, 0.0) * w).sum())
    assert 0.70 < kept.float().mean().item() < 0.80  # 8256 draws, keep 0.75


def test_compile_options_only_change_the_cpu():
    assert compile_.compile_options(torch.device("cpu"))["fallback_random"] is True
    assert compile_.compile_options(torch.device("cuda")) == {}

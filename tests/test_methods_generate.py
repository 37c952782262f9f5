"""generate with mixed-task batches (greedy and beam search) on tiny T5 / LLaMA / GPT-2:
the batch must give what each instance gives alone."""

from __future__ import annotations

import pytest
import torch
from method_utils import make_config, one_thread, scramble  # noqa: F401  (autouse fixture)
from tiny_backbones import batch, tiny

import pha

TASK_IDS = torch.tensor([0, 1, 2, 1, 0, 2])
GEN = dict(max_new_tokens=5, do_sample=False, pad_token_id=0)


def build(method, family):
    model = pha.get_model(tiny(family), make_config(method, family))
    scramble(model)
    return model


def _alone(model, ids, mask, task_ids, **kw):
    return [
        model.generate(ids[i : i + 1], mask[i : i + 1], task_ids=task_ids[i : i + 1], **kw)[0]
        for i in range(len(ids))
    ]


def _strip(seq: torch.Tensor) -> list[int]:
    """The sequence up to its first EOS (id 1; prompts never contain it), without trailing
    padding: a row generated alone is not padded to the batch's length."""
    out = seq.tolist()
    if 1 in out:
        out = out[: out.index(1) + 1]
    while out and out[-1] == 0:
        out.pop()
    return out


@pytest.mark.parametrize("family", ["t5", "llama", "gpt2"])
@pytest.mark.parametrize("method", ["pha", "hyperformer", "hyperdecoder", "adapter_per_task"])
@pytest.mark.parametrize("num_beams", [1, 3])
def test_mixed_task_generate_equals_per_instance_generate(method, family, num_beams):
    model = build(method, family)
    ids, mask, _ = batch(family)
    kw = dict(GEN, num_beams=num_beams)
    mixed = model.generate(ids, mask, task_ids=TASK_IDS, **kw)
    alone = _alone(model, ids, mask, TASK_IDS, **kw)
    assert [_strip(s) for s in mixed] == [_strip(s) for s in alone]


@pytest.mark.parametrize("family", ["t5", "llama", "gpt2"])
def test_generate_returns_several_sequences_per_instance(family):
    model = build("pha", family)
    ids, mask, _ = batch(family)
    out = model.generate(ids, mask, task_ids=TASK_IDS, num_beams=3, num_return_sequences=2, **GEN)
    assert out.shape[0] == 2 * len(ids)
    alone = model.generate(ids[2:3], mask[2:3], task_ids=TASK_IDS[2:3], num_beams=3,
                           num_return_sequences=2, **GEN)  # fmt: skip
    assert [_strip(s) for s in out[4:6]] == [_strip(s) for s in alone]


@pytest.mark.parametrize("family", ["t5", "llama", "gpt2"])
def test_generate_without_task_ids_uses_the_nearest_prototype(family):
    model = build("pha", family)
    ids, mask, _ = batch(family)
    with torch.no_grad():  # prototypes at three instances' embeddings: a mixed retrieval
        model.prototypes.weight.copy_(model.embed(ids, mask)[:3])
    retrieved, _ = model.retrieve(ids, mask)
    assert retrieved[:3].tolist() == [0, 1, 2]  # a mixed batch, so the test can fail
    torch.testing.assert_close(
        model.generate(ids, mask, **GEN), model.generate(ids, mask, task_ids=retrieved, **GEN)
    )


def test_generate_depends_on_the_task():
    model = build("pha", "t5")
    ids, mask, _ = batch("t5")
    outs = {
        tuple(model.generate(ids, mask, task_ids=torch.full((6,), k), **GEN).flatten().tolist())
        for k in range(3)
    }
    assert len(outs) > 1

"""Bad input to the model API's configs and add_task: a clear error naming the argument,
and a refused add_task leaves the model as it was (issue 15)."""

import pytest
import torch
from method_utils import make_config
from tiny_backbones import batch, tiny

import pha


def test_config_arguments():
    """Issue 15, item 10 and PHAConfig(num_labels=[2.5, 3])."""
    with pytest.raises(TypeError, match="tasks must be a list of task names, got 'ab'"):
        pha.PHAConfig(tasks="ab", num_labels=[2, 2])
    for bad in ([2.5, 3], [True, 3], 2, "23", [2]):
        with pytest.raises(ValueError, match="num_labels must give an integer class count >= 1"):
            pha.PHAConfig(tasks=["a", "b"], num_labels=bad)
    with pytest.raises(ValueError, match="label_smoothing must be a number in"):
        pha.PHAConfig(tasks=["a"], num_labels=[2], label_smoothing="0.1")
    assert pha.PHAConfig(tasks=("a", "b"), num_labels=(2, 3)).tasks == ["a", "b"]


def _state(model):
    cfg = model.method_config
    return (
        list(cfg.tasks),
        list(cfg.num_labels or []),
        {n: t.clone() for n, t in model.state_dict().items()},
    )


@pytest.mark.parametrize(
    "name, examples, num_labels, match",
    [
        ("", None, 2, "name must be a non-empty task name, got ''"),
        (5, None, 2, "name must be a non-empty task name, got 5"),
        ("new", {}, 2, "examples must hold input_ids"),
        (
            "new",
            "empty",
            2,
            r"input_ids: expected at least one instance and one token, got shape \[0, 7\]",
        ),
        ("new", None, 2.5, "needs num_labels: an integer >= 1 for the new head, got 2.5"),
        ("new", None, 0, "needs num_labels: an integer >= 1 for the new head, got 0"),
    ],
)
def test_add_task_refuses_and_changes_nothing(name, examples, num_labels, match):
    """Issue 15, item 4 and the add_task tracebacks; a refused num_labels used to grow
    the prototypes before failing."""
    model = pha.get_model(tiny("bert"), make_config("pha", "bert"))
    ids, mask, _ = batch("bert", b=4)
    ex = {"input_ids": ids, "attention_mask": mask}
    if examples == "empty":
        ex = {k: v[:0] for k, v in ex.items()}
    elif examples is not None:
        ex = examples
    before = _state(model)
    with pytest.raises(ValueError, match=match):
        model.add_task(name, ex, num_labels=num_labels)
    after = _state(model)
    assert before[:2] == after[:2] and before[2].keys() == after[2].keys()
    assert all(torch.equal(before[2][k], after[2][k]) for k in before[2])


TASK_IDS = torch.tensor([0, 1, 2, 0, 1, 2])


@pytest.mark.parametrize("family", ["bert", "t5"])
def test_forward_inputs(family):
    """Issue 15: float labels, too few labels, float or out-of-vocabulary input_ids, an
    empty batch."""
    from tiny_backbones import VOCAB

    model = pha.get_model(tiny(family), make_config("pha", family))
    ids, mask, labels = batch(family)
    with pytest.raises(
        TypeError, match=r"input_ids must be an integer tensor \[B, T\], got torch.float32"
    ):
        model(ids.float(), mask, task_ids=TASK_IDS)
    bad = ids + VOCAB
    with pytest.raises(
        ValueError,
        match=rf"input_ids values must lie in \[0, {VOCAB}\) \(the backbone's vocabulary\)",
    ):
        model(bad, mask, task_ids=TASK_IDS)
    with pytest.raises(
        ValueError,
        match=r"input_ids: expected at least one instance and one token, got shape \[0, 7\]",
    ):
        model(ids[:0], mask[:0], task_ids=TASK_IDS[:0])
    with pytest.raises(TypeError, match="labels must be an integer tensor .*, got torch.float32"):
        model(ids, mask, labels.float(), task_ids=TASK_IDS)
    with pytest.raises(
        ValueError, match=r"labels must have one row per instance of input_ids \(6\), got 3"
    ):
        model(ids, mask, labels[:3], task_ids=TASK_IDS)
    assert torch.isfinite(model(ids, mask, labels, task_ids=TASK_IDS).loss)


@pytest.mark.parametrize(
    "family, call",
    [("t5", "generate"), ("llama", "generate"), ("bert", "retrieve"), ("t5", "embed")],
)
def test_generate_retrieve_embed_inputs(family, call):
    """generate / retrieve / embed check input_ids and attention_mask as forward does,
    instead of failing deep inside transformers (or not at all: an out-of-vocabulary id)."""
    from tiny_backbones import VOCAB

    model = pha.get_model(tiny(family), make_config("pha", family)).eval()
    ids, mask, _ = batch(family)
    run = getattr(model, call)
    extra = {"task_ids": TASK_IDS, "max_new_tokens": 2} if call == "generate" else {}
    with pytest.raises(TypeError, match=r"input_ids must be an integer tensor \[B, T\]"):
        run(ids.float(), mask, **extra)
    with pytest.raises(ValueError, match=rf"input_ids values must lie in \[0, {VOCAB}\)"):
        run(ids + VOCAB, mask, **extra)
    with pytest.raises(ValueError, match=r"attention_mask must have the shape of input_ids"):
        run(ids, mask[:, :-1], **extra)
    assert run(ids, mask, **extra) is not None  # the same call with good inputs runs

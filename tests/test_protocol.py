"""The training protocol of pha.train: model selection on validation (the test split read
once, at the end), early stopping, the step budget, the linear probe, micro-batches."""

import json

import pytest
from train_utils import pha_cache, tiny_bert  # noqa: F401

import pha
from pha import train
from pha.data import MixedTaskSampler
from pha.train import _Batches

TASKS = ["rt_polarity", "bbc_topic"]


def args(model, out, *extra) -> list[str]:
    return ["--model", str(model), "--tasks", *TASKS, "--n-train", "16", "--n-eval", "8",
            "--max-steps", "6", "--eval-every", "2", "--batch-size", "8", "--max-length", "16",
            "--save-every", "0", "--output-dir", str(out), "--quiet", *extra]  # fmt: skip


def test_selection_reads_validation_then_test_once(tiny_bert, pha_cache, tmp_path, monkeypatch):  # noqa: F811
    calls = []
    evaluate = train.evaluate

    def spy(model, collator, data, split, batch_size):
        calls.append(split)
        return evaluate(model, collator, data, split, batch_size)

    monkeypatch.setattr(train, "evaluate", spy)
    out = tmp_path / "run"
    result = train.main(args(tiny_bert, out))
    assert calls == ["validation"] * 3 + ["test"]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    scores = {e["step"]: e["score"] for e in log if e["event"] == "validation"}
    best = max(scores, key=lambda s: (scores[s], -s))  # the first of equal scores is kept
    assert result["step"] == best and result["validation"]["score"] == scores[best]
    # the saved adapter is the selected checkpoint: re-evaluating it gives the same test metrics
    from pha import evaluate as pha_evaluate

    assert pha_evaluate.main([str(out)])["tasks"] == result["tasks"]


def test_select_last_and_early_stopping(tiny_bert, pha_cache, tmp_path):  # noqa: F811
    last = train.main(args(tiny_bert, tmp_path / "last", "--select", "last"))
    assert last["step"] == last["steps_trained"] == 6
    # a learning rate too small to change any prediction: no validation improves on the first
    stopped = train.main(args(tiny_bert, tmp_path / "stop", "--lr", "1e-12", "--patience", "1"))
    assert stopped["steps_trained"] == 4 and stopped["step"] == 2


def test_step_budget_follows_the_data():
    cfg = train.resolve_config(["--epochs", "6", "--batch-size", "32"])
    assert cfg.max_steps is None and cfg.total_steps(1200) == 225  # ceil(6 * 1200 / 32)
    assert cfg.total_steps(64) == cfg.min_steps  # tiny data: at least min_steps
    assert train.resolve_config(["--max-steps", "7"]).total_steps(10_000) == 7


def test_linear_probe_trains_only_the_heads(tiny_bert, pha_cache, tmp_path):  # noqa: F811
    from pha.backbones import load_backbone

    base, _, _ = load_backbone(str(tiny_bert))
    model = pha.get_model(base, pha.LinearProbeConfig(tasks=TASKS, num_labels=[2, 5]))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("heads.") for n in trainable)
    model.train()
    assert model.heads.training and not model.base_model.training  # frozen features: no dropout
    out = tmp_path / "probe"
    train.main(args(tiny_bert, out, "--method", "linear_probe"))
    from safetensors.torch import load_file

    saved = load_file(out / "adapter" / "adapter_model.safetensors")
    assert sorted(saved) == sorted(trainable)


def test_linear_probe_needs_an_encoder(tmp_path):
    from train_utils import save_tiny_backbone

    from pha.backbones import load_backbone

    base, _, _ = load_backbone(str(save_tiny_backbone(tmp_path / "t5", "seq2seq")))
    with pytest.raises(ValueError, match="linear_probe needs an encoder backbone"):
        pha.get_model(base, pha.LinearProbeConfig(tasks=TASKS))


@pytest.mark.parametrize("world, accum", [(1, 1), (1, 4), (2, 2), (4, 1)])
def test_micro_batches_cover_the_global_batch(world, accum):
    sampler = MixedTaskSampler([5, 7, 3], batch_size=8, seed=3)
    per_rank = [list(_Batches(sampler, 2, 5, rank, world, accum)) for rank in range(world)]
    for rank_batches in per_rank:
        assert len(rank_batches) == 3 * accum
        assert all(len(b) == 8 // (world * accum) for b in rank_batches)
    for i, step in enumerate(range(2, 5)):
        parts = [b for micro in range(accum) for b in
                 (per_rank[r][i * accum + micro] for r in range(world))]  # fmt: skip
        assert sorted(p for part in parts for p in part) == sorted(sampler.batch(step))


def test_task_loss_reduction_sum_is_batch_times_mean(tiny_bert):  # noqa: F811
    import torch

    from pha.backbones import load_backbone

    ids = torch.randint(5, 50, (6, 9))
    labels, task_ids = torch.tensor([0, 1, 1, 0, 3, 4]), torch.tensor([0, 0, 0, 1, 1, 1])
    losses = {}
    for reduction in ("mean", "sum"):
        torch.manual_seed(0)
        base, _, _ = load_backbone(str(tiny_bert))
        cfg = pha.AdapterConfig(tasks=TASKS, num_labels=[2, 5], task_loss_reduction=reduction)
        model = pha.get_model(base, cfg).eval()
        losses[reduction] = model(input_ids=ids, labels=labels, task_ids=task_ids).loss
    torch.testing.assert_close(losses["sum"], 6 * losses["mean"])
    with pytest.raises(ValueError, match="task_loss_reduction must be 'mean' or 'sum'"):
        pha.AdapterConfig(tasks=TASKS, num_labels=[2, 5], task_loss_reduction="max")


def test_n_val_shrinks_only_the_validation_split(tiny_bert, pha_cache, tmp_path, monkeypatch):  # noqa: F811
    sizes = []
    evaluate = train.evaluate

    def spy(model, collator, data, split, batch_size):
        sizes.append((split, [len(x) for x in data.split(split)]))
        return evaluate(model, collator, data, split, batch_size)

    monkeypatch.setattr(train, "evaluate", spy)
    train.main(args(tiny_bert, tmp_path / "run", "--n-val", "3", "--max-steps", "2"))
    assert sizes == [("validation", [3, 3]), ("test", [8, 8])]


def test_collect_runs_rows(tmp_path):
    import csv
    import importlib.util

    from train_utils import REPO

    spec = importlib.util.spec_from_file_location(
        "collect_runs", REPO / "benchmarks" / "collect_runs.py"
    )
    collect = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(collect)
    run = tmp_path / "run"
    run.mkdir()
    config = {**train.TrainConfig().to_dict(), "lr": 3e-4, "seed": 2, "output_dir": "x"}
    (run / "config.json").write_text(json.dumps(config))
    metrics = {"tasks": {"a": {"accuracy": 0.5, "macro_f1": 0.4}}, "average": 0.45, "step": 3,
               "validation": {"tasks": {"a": {"accuracy": 0.6, "macro_f1": 0.55}}, "score": 0.55}}  # fmt: skip
    (run / "metrics.json").write_text(json.dumps(metrics))
    out = tmp_path / "rows.csv"
    collect.main([str(run), "--csv", str(out)])
    rows = list(csv.DictReader(out.open()))
    assert [(r["split"], r["metric"], float(r["score"])) for r in rows] == [
        ("validation", "accuracy", 0.6), ("validation", "macro_f1", 0.55),
        ("test", "accuracy", 0.5), ("test", "macro_f1", 0.4)]  # fmt: skip
    assert all(r["method"] == "pha" and r["seed"] == "2" and r["n_train"] == "300" for r in rows)
    assert json.loads(rows[0]["config"]) == {"lr": 3e-4, "seed": 2}  # only what differs


def test_method_args_defaults_merge_under_the_flags(monkeypatch):
    from pha import train_config

    monkeypatch.setitem(train_config.METHOD_ARGS, "adapter", {"adapter_dim": 8, "per_task": True})
    cfg = train.resolve_config(["--method", "adapter", "--method-args", '{"adapter_dim": 4}'])
    assert cfg.method_args == {"adapter_dim": 4, "per_task": True}


def test_probe_phase_trains_only_the_heads(tiny_bert, pha_cache, tmp_path):  # noqa: F811
    from safetensors.torch import load_file

    from pha.backbones import load_backbone

    train.seed_everything(0)
    base, _, _ = load_backbone(str(tiny_bert))
    initial = pha.get_model(
        base, pha.AdapterConfig(tasks=TASKS, num_labels=[2, 5])
    ).trainable_state_dict()
    out = tmp_path / "lpft"
    train.main(args(tiny_bert, out, "--method", "adapter", "--probe-ratio", "0.9", "--max-steps", "3",
                    "--select", "last"))  # fmt: skip
    saved = load_file(out / "adapter" / "adapter_model.safetensors")
    for name, weight in saved.items():
        changed = not bool((weight == initial[name]).all())
        assert changed == name.startswith("heads."), name


def test_schedule_waits_for_the_probe_phase():
    factor = train.linear_schedule(warmup=2, total=10, start=4)
    assert [factor(s) for s in range(4)] == [0.0] * 4
    assert [round(factor(s), 3) for s in range(4, 10)] == [0.333, 0.667, 1.0, 0.75, 0.5, 0.25]

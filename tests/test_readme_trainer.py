"""The README's HF Trainer example (between the trainer-example markers) runs as written:
a few Trainer steps of PHA on real offline tasks, the loss goes down (the example asserts
it), the adapter is saved and pha.AutoPHAModel loads it back."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from train_utils import pha_cache  # noqa: F401  (fixture)

README = Path(__file__).resolve().parents[1] / "README.md"


def trainer_example() -> str:
    found = re.search(
        r"<!-- trainer-example -->\n```python\n(.*?)```\n<!-- /trainer-example -->",
        README.read_text(),
        re.S,
    )
    assert found, "README.md has no python block between the trainer-example markers"
    return found.group(1)


def test_readme_trainer_example_runs(pha_cache, tmp_path):  # noqa: F811
    env = {**os.environ, "PHA_CACHE": str(pha_cache), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", trainer_example()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    losses = re.search(r"loss every 5 steps: \[(.*)\]", result.stdout)
    assert losses and len(losses.group(1).split(",")) == 4, result.stdout[-2000:]

    import pha

    model = pha.AutoPHAModel.from_pretrained(tmp_path / "runs" / "trainer" / "adapter")
    assert model.method_config.base_model_name_or_path == "minilm"
    assert model.tasks == ["rt_polarity", "bbc_topic"]

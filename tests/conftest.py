import os

# Must be set before any @triton.jit decorator runs: the Triton kernels are tested on
# CPU tensors in Triton's interpreter (there is no GPU here).
os.environ.setdefault("TRITON_INTERPRET", "1")

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

TESTS = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def emulated_cuda_library(tmp_path_factory):
    """build(name) -> ctypes.CDLL of csrc/cuda/<name> compiled against the CUDA emulator,
    built once per session (tests/cuda_cpu_build.py)."""
    from cuda_cpu_build import CUDA_DIR, build_emulated

    built = {}

    def build(name: str):
        if name not in built:
            built[name] = build_emulated(CUDA_DIR / name, tmp_path_factory.mktemp("emulated"))
        return built[name]

    return build


@pytest.fixture(scope="session")
def triton_sm80():
    """compiled(family) -> the JSON rows of tests/triton_aot.py for that kernel family,
    failing when any of its variants did not compile. Every Triton kernel variant is compiled
    for sm_80 once per session, in a process without the interpreter."""
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run(
        [sys.executable, str(TESTS / "triton_aot.py")],
        env=env,
        cwd=TESTS.parent,
        capture_output=True,
        text=True,
    )
    families = {}
    for line in result.stdout.splitlines():
        row = json.loads(line)
        families.setdefault(row["family"], []).append(row)

    def compiled(family: str) -> list[dict]:
        rows = families.get(family)
        assert rows, f"no {family} kernel compiled:\n{result.stderr[-4000:]}"
        errors = [row for row in rows if "error" in row]
        assert not errors, "\n".join(f"{r['kernel']} {r['variant']}: {r['error']}" for r in errors)
        return rows

    return compiled

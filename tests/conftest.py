import os

# Must be set before any @triton.jit decorator runs: the Triton kernels are tested on
# CPU tensors in Triton's interpreter (there is no GPU here).
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)

"""Bad input to the ops and the data API gets a clear error naming the argument, or the
correct result (issue 15's raw tracebacks and the cases found beside them)."""

import numpy as np
import pytest
import torch

import pha.ops as ops
from pha.data import MixedTaskSampler, load_tasks


def test_supcon_labels_on_another_device():
    """Issue 15: labels on another device than z were read (.min()) before the device
    check, which fails inside torch (meta stands in for a second device here)."""
    z = torch.randn(4, 8)
    labels = torch.zeros(4, dtype=torch.long, device="meta")
    with pytest.raises(ValueError, match="all tensors must be on one device.*'labels'"):
        ops.supcon_loss(z, labels)
    with pytest.raises(ValueError, match="all tensors must be on one device.*'labels'"):
        ops.prototype_loss(z, torch.randn(2, 8), labels)
    with pytest.raises(TypeError, match="labels must be a torch.Tensor, got list"):
        ops.supcon_loss(z, [0, 1, 0, 1])


@pytest.mark.parametrize("loss", ["supcon", "prototype"])
def test_temperature_whose_inverse_overflows_is_refused(loss):
    """1/tau overflowing float32 made both losses NaN on every backend, silently."""
    z, labels = torch.randn(4, 8), torch.tensor([0, 1, 0, 1])

    def run(tau):
        if loss == "supcon":
            return ops.supcon_loss(z, labels, tau, backend="reference")
        return ops.prototype_loss(z, torch.randn(2, 8), labels, tau, backend="reference")

    with pytest.raises(ValueError, match=r"temperature must be >= 2.94e-39.*got 1e-39"):
        run(1e-39)
    assert torch.isfinite(run(1e-38))  # the smallest accepted temperatures stay finite


def test_task_sampling_temperature_near_zero_is_the_limit_not_nan():
    """Issue 15: --task-sampling 1e-300 overflowed N_k^(1/T) to inf/inf = NaN and numpy
    raised deep inside rng.choice. The limit T -> 0 puts all mass on the largest task."""
    s = MixedTaskSampler([10, 30, 20], batch_size=8, seed=0, temperature=1e-300)
    np.testing.assert_array_equal(s.probabilities(), [0.0, 1.0, 0.0])
    assert {t for t, _ in s.batch(0)} == {1}
    ties = MixedTaskSampler([30, 30, 20], batch_size=8, seed=0, temperature=1e-300)
    np.testing.assert_allclose(ties.probabilities(), [0.5, 0.5, 0.0])
    # T = 1 is still proportional, large T still near uniform
    np.testing.assert_allclose(MixedTaskSampler([10, 30], 8, 0, 1.0).probabilities(), [0.25, 0.75])
    for bad in ("hot", float("nan"), 0.0, -1.0, True):
        with pytest.raises(ValueError, match="temperature: expected a number > 0"):
            MixedTaskSampler([10], 8, 0, bad)


def test_load_tasks_arguments():
    """Issue 15, item 10 (library side): a single string is not a list of task names."""
    expected = r"tasks: expected a list of task names \(strings\), got "
    with pytest.raises(TypeError, match=expected + "'rt_polarity'"):
        load_tasks("rt_polarity")
    with pytest.raises(ValueError, match="seed: expected an integer >= 0, got -1"):
        load_tasks(["rt_polarity"], seed=-1)
    with pytest.raises(TypeError, match=expected + r"\['rt_polarity', 5\]"):
        load_tasks(["rt_polarity", 5])

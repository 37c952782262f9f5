"""Mixed-task batch sampling with a resumable order.

The batch of a step is a pure function of (seed, step), so the data order is restored
exactly from the step alone after a restart, and every rank of a distributed run
computes the same global batch (each then takes its own slice).

  proportional (temperature None): epochs over the union of all tasks' training
      examples, shuffled per epoch; tasks appear in proportion to their size.
  temperature T: each slot of a batch draws its task with p_k ∝ N_k^(1/T) (T=1:
      proportional, large T: uniform), then an example of that task, with replacement.
  single_task: the whole batch draws one task (p_k ∝ N_k, or N_k^(1/T) with a
      temperature), then distinct examples of it (with replacement only when the task has
      fewer examples than a batch): the HyperFormer++ release's task batches.
"""

from __future__ import annotations

import numpy as np


class MixedTaskSampler:
    """Global batches of (task_id, example_index) pairs."""

    def __init__(
        self,
        sizes: list[int],
        batch_size: int,
        seed: int,
        temperature: float | None = None,
        single_task: bool = False,
    ):
        if not sizes or any(not isinstance(n, int) or n < 1 for n in sizes):
            raise ValueError(f"sizes: expected a non-empty list of counts >= 1, got {sizes}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
        if temperature is not None and not (
            isinstance(temperature, int | float)
            and not isinstance(temperature, bool)
            and temperature > 0
        ):
            raise ValueError(f"temperature: expected a number > 0 or None, got {temperature!r}")
        self.sizes, self.batch_size, self.seed, self.temperature = (
            list(sizes),
            batch_size,
            seed,
            temperature,
        )
        self.single_task = bool(single_task)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)])
        self.step = 0  # the next step to sample
        self._cached_epoch, self._perm = -1, np.empty(0, dtype=np.int64)

    def probabilities(self) -> np.ndarray:
        """The probability of each task per slot."""
        n = np.asarray(self.sizes, dtype=np.float64)
        if self.temperature is None:
            return n / n.sum()
        # softmax(log N_k / T): N_k^(1/T) itself overflows for small T (1e-300 -> inf / inf)
        logits = np.log(n) / self.temperature
        w = np.exp(logits - logits.max())
        return w / w.sum()

    def batch(self, step: int) -> list[tuple[int, int]]:
        if self.single_task:
            rng = np.random.default_rng([self.seed, step, 2])
            task = int(rng.choice(len(self.sizes), p=self.probabilities()))
            n = self.sizes[task]
            if n >= self.batch_size:
                picks = rng.choice(n, size=self.batch_size, replace=False)
            else:
                picks = rng.integers(n, size=self.batch_size)
            return [(task, int(i)) for i in picks]
        if self.temperature is None:
            total = int(self.offsets[-1])
            start = step * self.batch_size
            flat = [
                self._epoch(pos // total)[pos % total]
                for pos in range(start, start + self.batch_size)
            ]
            task = np.searchsorted(self.offsets, flat, side="right") - 1
            return [(int(t), int(f - self.offsets[t])) for t, f in zip(task, flat)]
        rng = np.random.default_rng([self.seed, step, 1])
        tasks = rng.choice(len(self.sizes), size=self.batch_size, p=self.probabilities())
        return [(int(t), int(rng.integers(self.sizes[t]))) for t in tasks]

    def _epoch(self, epoch: int) -> np.ndarray:
        if self._cached_epoch != epoch:
            self._cached_epoch = epoch
            self._perm = np.random.default_rng([self.seed, epoch, 0]).permutation(
                int(self.offsets[-1])
            )
        return self._perm

    def __iter__(self):
        while True:  # step counts the batches handed out, so state_dict() is always current
            self.step += 1
            yield self.batch(self.step - 1)

    def state_dict(self) -> dict:
        return {
            "seed": self.seed,
            "step": self.step,
            "sizes": self.sizes,
            "temperature": self.temperature,
            "single_task": self.single_task,
        }

    def load_state_dict(self, state: dict) -> None:
        mine = {k: v for k, v in self.state_dict().items() if k != "step"}
        theirs = {k: state.get(k) for k in mine}
        if mine != theirs:
            raise ValueError(f"sampler state: saved with {theirs}, this run has {mine}")
        self.step = int(state["step"])

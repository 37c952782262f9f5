"""all_gather_with_grad under DDP: two gloo processes on CPU must reproduce, loss and
gradients, a single process that sees the whole global batch."""

from __future__ import annotations

import datetime
import os
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import pha
from pha.ops import _backend

WORLD = 2
D_IN, E, TASKS = 6, 8, 3
# Rows per rank: equal, then a smaller last batch on rank 1.
SPLITS = {"equal": (4, 4), "unequal": (5, 3)}


class _Retriever(torch.nn.Module):
    """z = MLP(x); L = supcon(z) + 0.5 prototype_loss(z, P) over the gathered batch."""

    def __init__(self, backend: str):
        super().__init__()
        self.backend = backend
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(D_IN, 16), torch.nn.Tanh(), torch.nn.Linear(16, E)
        )
        self.prototypes = torch.nn.Parameter(torch.randn(TASKS, E))

    def forward(self, x, task_ids):
        z = pha.ops.all_gather_with_grad(self.mlp(x))
        ids = pha.ops.all_gather_with_grad(task_ids)
        supcon = pha.ops.supcon_loss(z, ids, backend=self.backend)
        pro = pha.ops.prototype_loss(z, self.prototypes, ids, backend=self.backend)
        return supcon + 0.5 * pro, z


def _global_batch(split):
    gen = torch.Generator().manual_seed(7)
    n = sum(split)
    return torch.randn(n, D_IN, generator=gen), torch.randint(0, TASKS, (n,), generator=gen)


def _model(backend):
    torch.manual_seed(3)
    return _Retriever(backend)


def _single_process(backend, split):
    model = _model(backend)
    x, ids = _global_batch(split)
    loss, _ = model(x, ids)
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters()}


def _backends() -> list[str]:
    fast = [b for b in ("cpp",) if _backend.backends()[b] and _backend.implements(b, "supcon")]
    return ["reference", *fast]


def _worker(rank, backends, out_dir):
    # Rendezvous through a fresh file (no port to race for on a shared machine); a stuck
    # collective fails after a minute instead of hanging the suite.
    dist.init_process_group(
        "gloo",
        init_method=f"file://{os.path.join(out_dir, 'rendezvous')}",
        rank=rank,
        world_size=WORLD,
        timeout=datetime.timedelta(seconds=60),
    )
    results = {}
    for backend in backends:
        for name, split in SPLITS.items():
            x, ids = _global_batch(split)
            start = sum(split[:rank])
            rows = slice(start, start + split[rank])
            model = torch.nn.parallel.DistributedDataParallel(_model(backend))
            loss, z = model(x[rows], ids[rows])
            loss.backward()
            results[backend, name] = {
                "loss": loss.detach(),
                "z": z.detach(),
                "grads": {n: p.grad for n, p in model.module.named_parameters()},
            }
    path = os.path.join(out_dir, f"rank{rank}.pt")
    torch.save(results, path + ".tmp")
    os.replace(path + ".tmp", path)  # the peer never sees a partial file
    # destroy_process_group() on a file:// store was seen to hang once the peer had
    # exited. Every collective is complete on both ranks once both result files exist,
    # so wait for that and leave without tearing the group down.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if all(os.path.exists(os.path.join(out_dir, f"rank{r}.pt")) for r in range(WORLD)):
            break
        time.sleep(0.05)
    os._exit(0)


def test_ddp_matches_single_process(tmp_path):
    backends = _backends()
    workers = mp.start_processes(
        _worker, args=(backends, str(tmp_path)), nprocs=WORLD, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + 300
    while not workers.join(timeout=1):  # raises if a worker failed
        if time.monotonic() > deadline:
            for process in workers.processes:
                process.kill()
            pytest.fail("the 2 DDP workers did not finish within 300 s")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    for backend in backends:
        for name, split in SPLITS.items():
            loss, grads = _single_process(backend, split)
            x, _ = _global_batch(split)
            z_global = _model(backend).mlp(x).detach()
            for rank, result in enumerate(ranks):
                got, where = result[backend, name], f"{backend} {name} rank {rank}"
                torch.testing.assert_close(got["z"], z_global, msg=f"{where}: gathered z")
                torch.testing.assert_close(got["loss"], loss, msg=f"{where}: loss")
                for param, grad in grads.items():
                    # DDP has averaged the gradients: every rank must hold the global one.
                    torch.testing.assert_close(
                        got["grads"][param], grad, msg=f"{where}: grad {param}"
                    )


def test_identity_when_not_distributed():
    z = torch.randn(3, 4, requires_grad=True)
    assert pha.ops.all_gather_with_grad(z) is z

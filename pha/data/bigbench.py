"""BIG-bench multiple-choice tasks, read from the bigbench sdist (358 MB, never installed).

The sdist is a gzip'd tar, which has no random access: one sequential pass over it
(about 7 s) extracts the requested task.json files into the cache, plus an index of every
task, so that later runs read the small JSON files directly.
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

from tqdm.auto import tqdm

from .. import pypi_cache

_ROOT = "bigbench-1.0.0/bigbench/benchmark_tasks/"


def _task_dir() -> Path:
    return pypi_cache.cache_dir() / "bigbench"


def _cached(name: str) -> Path:
    return _task_dir() / "tasks" / name / "task.json"


def prefetch(names: list[str]) -> None:
    """Extract the task.json of every name in `names` (e.g. 'epistemic_reasoning',
    'multiemo/all_text_en') in one pass over the archive; writes the task index too."""
    if names:
        _scan(names)


def _scan(names: list[str]) -> None:
    index = _task_dir() / "index.json"
    missing = [n for n in names if not _cached(n).exists()]
    if index.exists():  # names the sdist does not have need no second pass
        known = set(json.loads(index.read_text()))
        missing = [n for n in missing if n in known]
        if not missing:
            return
    wanted = {_ROOT + n + "/task.json": n for n in missing}
    all_tasks = pypi_cache.read_archive("bigbench", lambda archive: _extract_tasks(archive, wanted))
    pypi_cache.write_cached(index, json.dumps(sorted(all_tasks)).encode())


def _extract_tasks(archive: Path, wanted: dict[str, str]) -> list[str]:
    """Write the task.json members in `wanted` (member -> task name) to the cache in one pass;
    return every task name in the archive."""
    all_tasks = []
    with (
        tarfile.open(archive, "r:gz") as tar,
        tqdm(total=os.path.getsize(archive), desc="scan bigbench", unit="B", unit_scale=True,
             disable=None, leave=False) as bar,
    ):  # fmt: skip
        for member in tar:
            bar.update(tar.fileobj.tell() - bar.n)  # compressed bytes read so far
            if member.name.startswith(_ROOT) and member.name.endswith("/task.json"):
                all_tasks.append(member.name[len(_ROOT) : -len("/task.json")])
                if member.name in wanted:
                    data = tar.extractfile(member).read()
                    pypi_cache.write_cached(_cached(wanted[member.name]), data)
    return all_tasks


def task_index() -> list[str]:
    """Every task (and subtask) name in the bigbench sdist."""
    _scan([])
    return json.loads((_task_dir() / "index.json").read_text())


def load_multiple_choice(name: str) -> tuple[tuple[str, ...], list[tuple[str, int]]]:
    """(class names, [(input, class id)]) of a BIG-bench task whose examples all choose
    from one fixed set of answers (`target_scores`; the class is the top-scored answer)."""
    prefetch([name])
    if not _cached(name).exists():
        names = task_index()
        close = [n for n in names if name.split("/")[0] in n][:20]
        raise ValueError(
            f"task: no BIG-bench task {name!r} ({len(names)} tasks in the sdist"
            + (f"; similar: {close}" if close else "")
            + "). Use bigbench:<task> or bigbench:<task>/<subtask>."
        )
    data = json.loads(_cached(name).read_text(encoding="utf-8"))
    examples = [e for e in data.get("examples", []) if e.get("target_scores")]
    if not examples:
        subtasks = sorted(n for n in task_index() if n.startswith(name + "/"))
        hint = f"; pick a subtask: {subtasks}" if subtasks else ""
        raise ValueError(f"task: bigbench:{name} has no multiple-choice examples{hint}")
    labels = tuple(examples[0]["target_scores"])
    out = []
    for e in examples:
        scores = e["target_scores"]
        if set(scores) != set(labels):
            raise ValueError(
                f"task: bigbench:{name} has per-example answer choices (e.g. {list(scores)[:4]} vs "
                f"{list(labels)[:4]}), not one fixed label set: it cannot be a classification task"
            )
        best = max(labels, key=lambda k: scores[k])  # first of the top-scored answers
        out.append((e["input"], labels.index(best)))
    return labels, out

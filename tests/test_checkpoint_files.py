"""pha.checkpoint: atomic writes under faults (disk full, read-only, a file in the way),
checksums of checkpoints and adapter files, the output-directory lock, stale temp files."""

import os
import subprocess
import sys

import pytest
import torch
from fault_utils import fill_disk, read_only, snapshot

from pha import checkpoint
from pha.checkpoint import CheckpointError
from pha.files import OutputError


def state(value=1.0):
    return {"fingerprint": {"seed": 0}, "model": {"w": torch.full((4,), value)}}


def test_checkpoint_round_trip_and_keep_last(tmp_path):
    for step in (1, 2, 3):
        checkpoint.save_checkpoint(tmp_path, step, state(step), keep_last=2)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == [
        "checkpoint-00000002.pt",
        "checkpoint-00000003.pt",
    ]
    loaded = checkpoint.load_checkpoint(checkpoint.checkpoint_path(tmp_path, 3), {"seed": 0})
    assert loaded["step"] == 3 and torch.equal(loaded["model"]["w"], torch.full((4,), 3.0))
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("where", ["payload", "header", "truncated"])
def test_corrupt_checkpoint_is_refused(tmp_path, where):
    """Issue 15, item 6: flipped bytes anywhere (even inside a tensor, which torch.load
    reads without complaint) fail the checksum."""
    path = checkpoint.save_checkpoint(tmp_path, 1, state(), keep_last=1)
    raw = bytearray(path.read_bytes())
    if where == "payload":
        at = raw.rindex(b"\x00\x00\x80\x3f")  # a 1.0f of the weights
        raw[at + 3] ^= 0x40  # 1.0 -> 3.0, still a valid tensor
    elif where == "header":
        raw[40] ^= 1
    else:
        raw = raw[:-100]
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=f"{path.name}.*(checksum|not a pha checkpoint)"):
        checkpoint.load_checkpoint(path, {"seed": 0})


def test_checkpoint_of_another_program_is_refused(tmp_path):
    path = tmp_path / "checkpoint-00000001.pt"
    torch.save({"format": 1, "step": 1}, path)  # a format-1 (pre-checksum) checkpoint
    with pytest.raises(CheckpointError, match="not a pha checkpoint of format 2"):
        checkpoint.load_checkpoint(path, {})


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    """Issue 15, item 5: a NaN checkpoint must not become the latest."""
    checkpoint.save_checkpoint(tmp_path, 1, state(), keep_last=1)
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"weights hold NaN or Inf \(\['w'\]\)"):
        checkpoint.save_checkpoint(tmp_path, 2, state(float("nan")), keep_last=1)
    assert snapshot(tmp_path) == before


def test_disk_full_during_a_checkpoint_keeps_the_latest(tmp_path, monkeypatch):
    checkpoint.save_checkpoint(tmp_path, 1, state(), keep_last=1)
    before = snapshot(tmp_path)
    fill_disk(monkeypatch)
    with pytest.raises(OutputError, match=r"checkpoint-00000002.pt: the disk is full"):
        checkpoint.save_checkpoint(tmp_path, 2, state(2.0), keep_last=1)
    monkeypatch.undo()
    assert snapshot(tmp_path) == before  # no half-written file, no temp file, latest kept
    assert os.listdir(tmp_path) == ["checkpoint-00000001.pt"]


def test_read_only_directory_is_named(tmp_path, monkeypatch):
    checkpoint.save_checkpoint(tmp_path, 1, state(), keep_last=1)
    before = snapshot(tmp_path)
    read_only(monkeypatch)
    with pytest.raises(
        OutputError, match=f"cannot write in {tmp_path}: the file system is read-only"
    ):
        checkpoint.save_checkpoint(tmp_path, 2, state(), keep_last=1)
    with pytest.raises(OutputError, match=f"--output-dir: cannot write in {tmp_path}: the file"):
        checkpoint.check_writable(tmp_path, "--output-dir")
    monkeypatch.undo()
    assert snapshot(tmp_path) == before


def test_output_directory_that_is_a_file(tmp_path):
    afile = tmp_path / "f"
    afile.write_text("x")
    with pytest.raises(OutputError, match=f"--output-dir: {afile} is a file, expected a directory"):
        checkpoint.ensure_directory(afile, "--output-dir")
    with pytest.raises(
        OutputError, match=f"{afile / 'a' / 'run'} cannot be created: {afile} is a file"
    ):
        checkpoint.ensure_directory(afile / "a" / "run", "--output-dir")
    assert afile.read_text() == "x"


def _write_two(directory, text):
    checkpoint.write_checksummed(directory, {"a.txt": text.encode(), "b.txt": text.encode()})


def test_atomic_write_files_all_or_nothing(tmp_path, monkeypatch):
    _write_two(tmp_path, "old")
    _write_two(tmp_path, "new")
    assert (tmp_path / "a.txt").read_text() == "new"
    checkpoint.verify_checksums(tmp_path, ["a.txt", "b.txt"])
    before = snapshot(tmp_path)
    # The disk fills while the manifest is written: the data files are not replaced either.
    fill_disk(monkeypatch, room=len("newer"))
    with pytest.raises(
        OutputError, match=r"checksums.sha256: the disk is full; nothing was replaced"
    ):
        _write_two(tmp_path, "newer")
    monkeypatch.undo()
    assert snapshot(tmp_path) == before
    checkpoint.verify_checksums(tmp_path, ["a.txt", "b.txt"])


def test_checksums_name_the_corrupt_or_missing_file(tmp_path, caplog):
    _write_two(tmp_path, "hello")
    (tmp_path / "b.txt").write_text("hellp")
    with pytest.raises(CheckpointError, match=r"b.txt does not match its checksum.*corrupt"):
        checkpoint.verify_checksums(tmp_path, ["a.txt", "b.txt"])
    (tmp_path / "b.txt").unlink()
    with pytest.raises(CheckpointError, match=r"not a complete saved adapter: missing \['b.txt'\]"):
        checkpoint.verify_checksums(tmp_path, ["a.txt", "b.txt"])
    with pytest.raises(FileNotFoundError, match="no directory .*nowhere"):
        checkpoint.verify_checksums(tmp_path / "nowhere", ["a.txt"])
    (tmp_path / checkpoint.CHECKSUMS_NAME).unlink()  # saved before checksums existed
    checkpoint.verify_checksums(tmp_path, ["a.txt"])
    assert "not verified" in caplog.text


def test_stale_temp_files_are_cleared_under_the_lock(tmp_path):
    """Issue 15, leftovers: a SIGKILL during a checkpoint write leaves .checkpoint-*.tmp."""
    stale = [".checkpoint-k2j3h4.tmp", ".checkpoint-00000004.pt-ab_c1.tmp", ".metrics.json-x.tmp",
             "adapter/.adapter_model.safetensors-q9.tmp", "adapter/.checksums.sha256-1.tmp"]  # fmt: skip
    keep = ["notes.tmp", ".mine-1.tmp", "checkpoint-00000003.pt", "adapter/pha_config.json"]
    (tmp_path / "adapter").mkdir()
    for name in stale + keep:
        (tmp_path / name).write_bytes(b"half")
    with checkpoint.lock_output_dir(tmp_path):
        pass
    left = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    assert left == set(keep + [checkpoint.LOCK_NAME])


def test_a_second_holder_of_the_output_directory_is_refused(tmp_path):
    """Issue 15, item 2, on the lock itself (another process holds it)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pha.checkpoint import lock_output_dir\n"
         f"with lock_output_dir({str(tmp_path)!r}):\n print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(
            OutputError, match=rf"{tmp_path} is in use by another run \(pid {holder.pid}\)"
        ):
            with checkpoint.lock_output_dir(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with checkpoint.lock_output_dir(tmp_path):  # released when its holder dies
        pass

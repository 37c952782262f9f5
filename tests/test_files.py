"""pha.files, the one atomic writer of every file pha writes: a failure midway (a writer
that raises, a full disk) leaves the old file or directory as it was and no temporary
behind; a killed writer's temporaries are cleared; files get the usual permissions."""

import errno
import os
import stat

import pytest
from fault_utils import fill_disk

from pha import files
from pha.files import OutputError


def _listing(directory):
    return sorted(os.listdir(directory))


def test_atomic_write_replaces_the_whole_file(tmp_path):
    target = tmp_path / "f.bin"
    assert files.atomic_write(target, b"old") == target
    files.atomic_write(target, lambda f: (f.write(b"ne"), f.write(b"w")))
    assert target.read_bytes() == b"new" and _listing(tmp_path) == ["f.bin"]


def test_a_writer_failing_midway_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")

    def half_then_fail(f):
        f.write(b"half of the new file")
        raise RuntimeError("the source broke off")

    with pytest.raises(RuntimeError, match="broke off"):  # not an I/O error: passed through
        files.atomic_write(target, half_then_fail)
    assert target.read_bytes() == b"old" and _listing(tmp_path) == ["f.bin"]


def test_a_full_disk_midway_is_an_output_error_with_its_errno(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    fill_disk(monkeypatch, room=3)
    with pytest.raises(OutputError, match=f"cannot write {target}: the disk is full") as e:
        files.atomic_write(target, b"more than three bytes")
    monkeypatch.undo()
    assert e.value.errno == errno.ENOSPC and isinstance(e.value, OSError)
    assert target.read_bytes() == b"old" and _listing(tmp_path) == ["f.bin"]


def _tree(directory):
    return {
        os.path.relpath(os.path.join(root, n), directory): open(os.path.join(root, n)).read()
        for root, _, names in os.walk(directory)
        for n in names
    }


def test_atomic_directory_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "model"

    def fill(out):
        (out / "sub").mkdir()
        (out / "sub" / "a.txt").write_text("a")
        (out / "b.txt").write_text("b")

    assert files.atomic_directory(target, fill) == target
    assert _tree(target) == {"sub/a.txt": "a", "b.txt": "b"}

    def fill_then_fail(out):
        (out / "a.txt").write_text("half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    other = tmp_path / "other"
    with pytest.raises(OutputError, match=f"cannot write {other}: the disk is full"):
        files.atomic_directory(other, fill_then_fail)
    assert _listing(tmp_path) == ["model"]  # no "other", no temporary


def test_remove_stale_temps_clears_only_the_targets_temporaries(tmp_path):
    (tmp_path / ".model-abc.tmp").mkdir()  # a killed atomic_directory("model")
    (tmp_path / ".model-abc.tmp" / "x").write_text("x")
    (tmp_path / ".model-def.tmp").write_text("y")  # a killed atomic_write("model")
    for keep in ("model2", ".model2-abc.tmp", ".model-abc", "user.tmp"):
        (tmp_path / keep).write_text("kept")
    files.remove_stale_temps(tmp_path / "model")
    assert _listing(tmp_path) == [".model-abc", ".model2-abc.tmp", "model2", "user.tmp"]


def test_written_files_and_directories_get_the_usual_permissions(tmp_path):
    """mkstemp / mkdtemp make private temporaries (0600 / 0700); what they become is not
    private: the modes open() and mkdir() would give under the process's umask."""
    path = files.atomic_write(tmp_path / "f", b"x")
    directory = files.atomic_directory(tmp_path / "d", lambda out: None)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~files._UMASK
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o777 & ~files._UMASK


def test_sha256_file(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    assert files.sha256_file(tmp_path / "f") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )

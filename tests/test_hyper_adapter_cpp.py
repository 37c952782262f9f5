"""C++ CPU hyper_adapter specifics: direct launcher calls, every ISA path, segment layouts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from backend_utils import require
from test_hyper_adapter import SHAPES, check_backend, make_inputs

import pha
from pha.ops import reference

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _cpp_only():
    require("cpp", "hyper_adapter")


ISA_PATHS = ("generic", "avx512", "avx512_bf16", "amx_bf16")


@pytest.fixture(params=ISA_PATHS)
def isa(request, monkeypatch):
    """Runs a test on each kernel path PHA_CPU_ISA can force (read per call); a path this
    CPU cannot run is skipped with the extension's reason (what the CPU or OS lacks)."""
    monkeypatch.setenv("PHA_CPU_ISA", request.param)
    if request.param not in pha.ops.cpu_isa_paths():
        with pytest.raises(RuntimeError, match="names kernels this CPU cannot run") as refused:
            pha.ops.cpu_isa()
        pytest.skip(f"{refused.value} (features: {', '.join(pha.ops.cpu_features()) or 'none'})")
    assert pha.ops.cpu_isa() == request.param
    return request.param


def fwd(x, wd, bd, wu, bu, index=None, activation="relu", save_hidden=True):
    return torch.ops.pha_C.hyper_adapter_forward(x, wd, bd, wu, bu, index, activation, save_hidden)


def bwd(grad_out, x, wd, wu, hidden, index=None, activation="relu"):
    return torch.ops.pha_C.hyper_adapter_backward(grad_out, x, wd, wu, hidden, index, activation)


# ---------------------------------------------------------------- launcher validation
class TestLauncherErrors:
    """Bad input straight to torch.ops.pha_C: a RuntimeError naming the problem, no crash."""

    def _inputs(self):
        return make_inputs(3, 2, 8, 4, 3)[0]

    @pytest.mark.parametrize("bad", [[0, 3, 1], [0, -1, 1], [2**40, 0, 0]])
    def test_index_out_of_range(self, bad):
        x, wd, bd, wu, bu = self._inputs()
        index = torch.tensor(bad)
        with pytest.raises(RuntimeError, match=r"index values must lie in \[0, 3\)"):
            fwd(x, wd, bd, wu, bu, index)
        _, hidden = fwd(x, wd, bd, wu, bu)
        with pytest.raises(RuntimeError, match=r"index values must lie in \[0, 3\)"):
            bwd(torch.ones_like(x), x, wd, wu, hidden, index)

    def test_index_wrong_length_and_dtype(self):
        x, wd, bd, wu, bu = self._inputs()
        with pytest.raises(RuntimeError, match=r"index must have shape \[B=3\]"):
            fwd(x, wd, bd, wu, bu, torch.tensor([0, 1]))
        with pytest.raises(RuntimeError, match="index must be int64"):
            fwd(x, wd, bd, wu, bu, torch.tensor([0, 1, 2], dtype=torch.int32))
        with pytest.raises(RuntimeError, match="index must have 1 dimensions"):
            fwd(x, wd, bd, wu, bu, torch.zeros(3, 1, dtype=torch.long))

    def test_wrong_shapes(self):
        x, wd, bd, wu, bu = self._inputs()
        with pytest.raises(RuntimeError, match=r"w_up must have shape \[G, r, d\]"):
            fwd(x, wd, bd, wu[:, :, :7].contiguous(), bu)
        with pytest.raises(RuntimeError, match=r"w_down must have shape \[G, d, r\]"):
            fwd(x, wd[:, :5].contiguous(), bd, wu, bu)
        with pytest.raises(RuntimeError, match=r"b_down must have shape \[G, r\]"):
            fwd(x, wd, bd[:, :3].contiguous(), wu, bu)
        with pytest.raises(RuntimeError, match=r"b_up must have shape \[G, d\]"):
            fwd(x, wd, bd, wu, bu[:2].contiguous())
        with pytest.raises(RuntimeError, match=r"x must have 3 dimensions"):
            fwd(x[0], wd, bd, wu, bu)
        with pytest.raises(RuntimeError, match=r"must equal x.shape\[0\]"):
            fwd(x, wd[:2], bd[:2], wu[:2], bu[:2])

    def test_backward_shapes(self):
        x, wd, bd, wu, bu = self._inputs()
        _, hidden = fwd(x, wd, bd, wu, bu)
        with pytest.raises(RuntimeError, match=r"grad_out must have shape"):
            bwd(torch.ones(3, 2, 7), x, wd, wu, hidden)
        with pytest.raises(RuntimeError, match=r"hidden must have shape \[B, T, r\]"):
            bwd(torch.ones_like(x), x, wd, wu, hidden[:, :1].contiguous())
        _, no_hidden = fwd(x, wd, bd, wu, bu, save_hidden=False)
        with pytest.raises(RuntimeError, match="hidden must have 3 dimensions"):
            bwd(torch.ones_like(x), x, wd, wu, no_hidden)
        with pytest.raises(RuntimeError, match="hidden must be float32"):
            bwd(torch.ones_like(x), x, wd, wu, hidden.double())

    def test_noncontiguous_rejected(self):
        x, wd, bd, wu, bu = self._inputs()
        x_t = x.transpose(0, 1).contiguous().transpose(0, 1)
        with pytest.raises(RuntimeError, match="x must be contiguous"):
            fwd(x_t, wd, bd, wu, bu)
        with pytest.raises(RuntimeError, match="w_up must be contiguous"):
            fwd(x, wd, bd, wu.transpose(1, 2).contiguous().transpose(1, 2), bu)

    def test_dtypes_and_activation(self):
        x, wd, bd, wu, bu = self._inputs()
        with pytest.raises(RuntimeError, match="must have the dtype of x"):
            fwd(x, wd.double(), bd, wu, bu)
        with pytest.raises(RuntimeError, match="b_up must have the dtype of x"):
            fwd(x, wd, bd, wu, bu.bfloat16())
        with pytest.raises(RuntimeError, match="x must be float32, bfloat16 or float64"):
            fwd(x.half(), wd.half(), bd.half(), wu.half(), bu.half())
        with pytest.raises(RuntimeError, match="activation must be one of"):
            fwd(x, wd, bd, wu, bu, activation="tanh")

    def test_bad_isa_variable(self, monkeypatch):
        monkeypatch.setenv("PHA_CPU_ISA", "sse9")
        with pytest.raises(ValueError, match="PHA_CPU_ISA must be one of auto, generic"):
            fwd(*self._inputs())
        with pytest.raises(ValueError, match="PHA_CPU_ISA must be"):
            pha.ops.cpu_isa()


@pytest.mark.parametrize("path", ISA_PATHS[1:])  # generic runs everywhere
def test_forcing_a_path_the_cpu_lacks_raises(path, monkeypatch):
    if path in pha.ops.cpu_isa_paths():
        pytest.skip(f"this CPU runs {path}: nothing to refuse")
    monkeypatch.setenv("PHA_CPU_ISA", path)
    with pytest.raises(RuntimeError, match=f"PHA_CPU_ISA={path} names kernels this CPU cannot"):
        fwd(*make_inputs(2, 2, 8, 4, 2)[0])


def test_amx_features_are_consistent():
    """amx_bf16 is a runnable path exactly when the extension reports the feature usable; a
    CPU with AMX whose tiles the OS withholds says why instead."""
    features = pha.ops.cpu_features()
    usable = "amx_bf16" in features
    assert usable == ("amx_bf16" in pha.ops.cpu_isa_paths())
    withheld = [f for f in features if f.startswith("amx_bf16 unusable: ")]
    assert not (usable and withheld)


def test_auto_takes_the_best_path(monkeypatch):
    """auto is the last path of ISA_PATHS this CPU runs (the order cpu_isa.h documents)."""
    monkeypatch.setenv("PHA_CPU_ISA", "auto")
    paths = pha.ops.cpu_isa_paths()
    assert paths == tuple(p for p in ISA_PATHS if p in paths)
    assert paths[0] == "generic" and pha.ops.cpu_isa() == paths[-1]
    monkeypatch.delenv("PHA_CPU_ISA")
    assert pha.ops.cpu_isa() == paths[-1]


# ---------------------------------------------------------------- results
def test_save_hidden(isa):
    (x, wd, bd, wu, bu), index = make_inputs(4, 3, 24, 10, 2, indexed=True)
    out, hidden = fwd(x, wd, bd, wu, bu, index, "gelu", False)
    assert hidden.shape == (0,) and hidden.dtype == torch.float32
    out2, hidden = fwd(x, wd, bd, wu, bu, index, "gelu", True)
    torch.testing.assert_close(out2, out, rtol=0, atol=0)
    expected = torch.baddbmm(bd[index].unsqueeze(1), x, wd[index])
    assert hidden.dtype == torch.float32
    torch.testing.assert_close(hidden, expected, rtol=1e-5, atol=1e-5)


def test_empty_tokens(isa):
    (x, wd, bd, wu, bu), _ = make_inputs(2, 0, 8, 4, 2)
    out, hidden = fwd(x, wd, bd, wu, bu)
    assert out.shape == (2, 0, 8) and hidden.shape == (2, 0, 4)
    grads = bwd(torch.ones_like(x), x, wd, wu, hidden)
    for grad, like in zip(grads, (x, wd, bd, wu, bu)):
        assert grad.shape == like.shape and not grad.any()


# Segment-size distributions of the indexed (task-grouped) case, as in Punica's tests:
# B=12 instances over G=6 sets.
SEGMENTS = {
    "all distinct": [5, 0, 3, 1, 4, 2, 11, 7, 6, 9, 8, 10],
    "uniform": [0, 1, 2, 3, 4, 5, 5, 4, 3, 2, 1, 0],
    "skewed": [2, 2, 2, 2, 2, 2, 2, 2, 2, 0, 5, 2],
    "all identical": [3] * 12,
    "unused sets": [1, 4, 1, 4, 4, 1, 1, 1, 4, 4, 1, 1],
}


@pytest.mark.parametrize("layout", list(SEGMENTS))
def test_segment_layouts(layout, isa):
    index = torch.tensor(SEGMENTS[layout])
    g = 12 if layout == "all distinct" else 6
    # T=37 and d=70 cross tile and vector boundaries; segments span several instances.
    check_backend("cpp", 12, 37, 70, 20, g, torch.float32, "silu", True, index)


@pytest.mark.parametrize("indexed", [False, True])
def test_tiles_and_activations(indexed, isa):
    for activation in ("relu", "gelu", "identity"):
        check_backend(
            "cpp", 5, 70, 100, 33, 3 if indexed else 5, torch.float32, activation, indexed
        )


@pytest.mark.parametrize("indexed", [False, True])
def test_bf16_bigger_shape(indexed, isa):
    check_backend("cpp", 6, 40, 192, 64, 3 if indexed else 6, torch.bfloat16, "relu", indexed)


# bf16 shapes that reach each edge of the AMX kernels' 16 x 16 x 32 tiles and 32 x 32 C
# blocks: token tiles of 64 rows and a 17-row tail, r of 48 (a block of one column tile),
# d a multiple of 32 (operands used in place) or not (packed), one set with more than the
# 1024 token rows of a weight-gradient pass (the column-slice phase).
TILE_EDGES = {
    "per-instance": (2, 81, 160, 48, 2, False, None),
    "indexed d=70": (5, 13, 70, 48, 3, True, torch.tensor([2, 0, 2, 2, 0])),
    "one set, 1100 rows": (4, 275, 64, 40, 1, True, torch.zeros(4, dtype=torch.long)),
}


@pytest.mark.parametrize("shape", list(TILE_EDGES))
def test_bf16_tile_edges(shape, isa):
    b, t, d, r, g, indexed, index = TILE_EDGES[shape]
    check_backend("cpp", b, t, d, r, g, torch.bfloat16, "gelu", indexed, index)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("segments", [3, 5])
def test_bf16_forward_by_tile_and_by_segment(threads, segments, isa):
    """bf16 loads (packs or widens) a set's weights per thread: the forward hands out
    whole segments once there are two per thread, single tiles below that; both orders
    (3 segments at 2 threads: tiles; otherwise segments), several tiles per segment."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        index = torch.arange(10) % segments
        check_backend("cpp", 10, 37, 70, 24, segments, torch.bfloat16, "relu", True, index)
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_odd_shapes_every_path(shape, dtype, isa):
    """Forward and every gradient against the reference, on each kernel path."""
    b, t, d, r, g, indexed, index = SHAPES[shape]
    for activation in ("relu", "gelu", "silu"):
        check_backend("cpp", b, t, d, r, g, dtype, activation, indexed, index)


def test_float64_is_exact_enough():
    (x, wd, bd, wu, bu), index = make_inputs(3, 5, 17, 6, 2, torch.float64, indexed=True)
    out, _ = fwd(x, wd, bd, wu, bu, index, "silu", False)
    expected = reference.hyper_adapter(x, wd, bd, wu, bu, index, "silu")
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_public_op_uses_cpp_by_default():
    assert pha.ops.backends()["cpp"]
    from pha.ops import _backend

    assert _backend.resolve(None, torch.device("cpu"), "hyper_adapter") == "cpp"


# ---------------------------------------------------------------- the benchmark
def test_benchmark_quick_runs(tmp_path):
    """bench_adapter.py must keep working: a smoke run on tiny shapes, JSON checked."""
    out = tmp_path / "bench.json"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "bench_adapter.py"),
        "--quick",
        "--shapes",
        "2,3,16,8,0;3,2,16,8,2",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "PHA_CPU_ISA": "auto"}
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert set(result["gemm_peak_gflops"]) == {"fp32", "bf16"}
    rows = result["results"]
    providers = {row["provider"] for row in rows}
    assert providers == {"reference", "cpp"}
    assert len(rows) == 2 * 2 * 2 * 2  # shapes x dtypes x modes x providers
    for row in rows:
        assert row["q20_ms"] <= row["median_ms"] <= row["q80_ms"] and row["gflops"] > 0
        # paired per round
        for ratio in ("speedup_vs_reference", "speedup_vs_shared", "fraction_of_gemm_peak"):
            assert row[f"{ratio}_q20"] <= row[ratio] <= row[f"{ratio}_q80"]
    assert "speedup_vs_reference" in rows[0] and "cpp" in proc.stdout


def test_flop_counter_counts_the_fused_gemms():
    """torch's flop counter sees the fused op's GEMMs: 4·B·T·d·r forward, 8·B·T·d·r backward."""
    from torch.utils.flop_counter import FlopCounterMode

    require("cpp", "hyper_adapter")
    b, t, d, r = 3, 5, 7, 4
    x, *weights = (v.requires_grad_() for v in make_inputs(b, t, d, r, b)[0])
    with FlopCounterMode(display=False) as forward:
        out = pha.ops.hyper_adapter(x, *weights, backend="cpp")
    assert forward.get_total_flops() == 4 * b * t * d * r
    with FlopCounterMode(display=False) as backward:
        out.sum().backward()
    assert backward.get_total_flops() == 8 * b * t * d * r

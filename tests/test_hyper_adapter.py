"""hyper_adapter: every backend against the eager reference, forward and all gradients."""

from __future__ import annotations

import pytest
import torch
from backend_utils import KERNEL_BACKENDS, assert_close_fa, device_for, require
from hypothesis import given, settings
from hypothesis import strategies as st

import pha
from pha.ops import reference
from pha.ops.hyper_adapter import compute_dtype as hyper_adapter_dtype

ACTIVATIONS = ("relu", "gelu", "silu", "identity")
ARGS = ("x", "w_down", "b_down", "w_up", "b_up")


def make_inputs(
    b, t, d, r, g, dtype=torch.float32, device="cpu", indexed=False, index=None, scale=0.5
):
    x = torch.randn(b, t, d, dtype=torch.float64, device=device)
    tensors = [
        x,
        torch.randn(g, d, r, dtype=torch.float64, device=device) * scale / d**0.5,
        torch.randn(g, r, dtype=torch.float64, device=device) * 0.1,
        torch.randn(g, r, d, dtype=torch.float64, device=device) * scale / r**0.5,
        torch.randn(g, d, dtype=torch.float64, device=device) * 0.1,
    ]
    if indexed and index is None:
        index = torch.randint(0, g, (b,), device=device)
    return [t_.to(dtype) for t_ in tensors], (index.to(device) if index is not None else None)


def run(fn, tensors, index, activation, grad_out):
    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    out = fn(*leaves, index=index, activation=activation)
    out.backward(grad_out.to(out.dtype))
    return out.detach(), [leaf.grad for leaf in leaves]


def run_backend(backend, tensors, index, activation, grad_out):
    def fn(*args, **kwargs):
        return pha.ops.hyper_adapter(*args, **kwargs, backend=backend)

    return run(fn, tensors, index, activation, grad_out)


def check_backend(
    backend, b, t, d, r, g, dtype, activation, indexed=False, index=None, atol=None, noncontig=False
):
    device = device_for(backend)
    tensors, index = make_inputs(b, t, d, r, g, dtype, device, indexed, index)
    if noncontig:  # same values, transposed storage
        tensors[0] = tensors[0].transpose(0, 1).contiguous().transpose(0, 1)
        assert not tensors[0].is_contiguous()
    grad_out = torch.randn(b, t, d, dtype=torch.float64, device=device)
    ref_hi = run(
        reference.hyper_adapter, [x.double() for x in tensors], index, activation, grad_out
    )
    ref_same = run(reference.hyper_adapter, tensors, index, activation, grad_out)
    out = run_backend(backend, tensors, index, activation, grad_out)
    atol = atol if atol is not None else (1e-5 if dtype == torch.float32 else 1e-2)
    names = ("out",) + tuple(f"grad {n}" for n in ARGS)
    for name, o, s, h in zip(
        names, [out[0], *out[1]], [ref_same[0], *ref_same[1]], [ref_hi[0], *ref_hi[1]]
    ):
        assert_close_fa(f"{backend} {name}", o, s, h, atol)


# (B, T, d, r, G, indexed, index): the odd shapes the contract must survive.
SHAPES = {
    "basic": (3, 4, 16, 8, 3, False, None),
    "T=1": (2, 1, 24, 16, 2, False, None),
    "B=1": (1, 5, 16, 8, 1, False, None),
    "r=5": (2, 3, 32, 5, 2, False, None),
    "r=17,d=33": (2, 3, 33, 17, 2, False, None),
    "d=1,r=1": (2, 2, 1, 1, 2, False, None),
    "indexed G=1": (4, 3, 16, 8, 1, True, torch.zeros(4, dtype=torch.long)),
    "repeated+unused": (5, 3, 19, 6, 6, True, torch.tensor([3, 3, 0, 3, 5])),
    "indexed G>B": (2, 2, 16, 8, 7, True, torch.tensor([6, 1])),
    "indexed all-distinct": (4, 2, 16, 8, 4, True, torch.tensor([2, 0, 3, 1])),
}


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("shape", list(SHAPES), ids=list(SHAPES))
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_matches_reference_fp32(backend, shape, activation):
    require(backend, "hyper_adapter")
    b, t, d, r, g, indexed, index = SHAPES[shape]
    check_backend(backend, b, t, d, r, g, torch.float32, activation, indexed, index)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("shape", ["basic", "r=17,d=33", "repeated+unused"])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_matches_reference_bf16(backend, shape, activation):
    require(backend, "hyper_adapter")
    b, t, d, r, g, indexed, index = SHAPES[shape]
    check_backend(backend, b, t, d, r, g, torch.bfloat16, activation, indexed, index)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("indexed", [False, True])
def test_noncontiguous_x(backend, indexed):
    require(backend, "hyper_adapter")
    check_backend(backend, 3, 4, 20, 8, 3, torch.float32, "silu", indexed, noncontig=True)


@pytest.mark.parametrize("backend", ["cpp", "cuda"])
@pytest.mark.parametrize("indexed", [False, True])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_backend_handles_large_tiles(backend, indexed, activation):
    """Shapes past one register/cache tile: many tokens, d and r spanning several blocks."""
    require(backend, "hyper_adapter")
    check_backend(backend, 6, 37, 200, 70, 3 if indexed else 6, torch.float32, activation, indexed)


@pytest.mark.parametrize("backend", ["reference", "cpp"])
@pytest.mark.parametrize("indexed", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu", "silu", "identity"])
def test_gradcheck_float64(backend, indexed, activation):
    if backend != "reference":
        require(backend, "hyper_adapter")
    tensors, index = make_inputs(
        3,
        2,
        5,
        3,
        2 if indexed else 3,
        torch.float64,
        indexed=indexed,
        index=torch.tensor([1, 1, 0]) if indexed else None,
    )
    if activation == "relu":  # keep pre-activations away from the kink at 0
        tensors[2] = tensors[2] + torch.sign(tensors[2]) * 0.5
    leaves = [t.requires_grad_(True) for t in tensors]

    def fn(*args):
        return pha.ops.hyper_adapter(*args, index=index, activation=activation, backend=backend)

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-6)


def _paths(backend: str) -> tuple[str | None, ...]:
    """The C++ backend's kernel paths (PHA_CPU_ISA) this CPU runs; one run elsewhere."""
    return pha.ops.cpu_isa_paths() if backend == "cpp" else (None,)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("where", ARGS)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_propagate(backend, dtype, where, value, monkeypatch):
    """NaN/Inf in x or in any weight: the output and every gradient are non-finite exactly
    where the reference's are (relu must not turn NaN into 0), on every kernel path."""
    require(backend, "hyper_adapter")
    device = device_for(backend)
    tensors, index = make_inputs(3, 4, 20, 6, 2, dtype, device, index=torch.tensor([1, 0, 1]))
    flat = tensors[ARGS.index(where)].view(-1)
    flat[1], flat[flat.numel() // 2] = value, value
    grad_out = torch.randn(3, 4, 20, dtype=torch.float64, device=device)
    for activation in ACTIVATIONS:
        ref = run(
            reference.hyper_adapter, [t.double() for t in tensors], index, activation, grad_out
        )
        for path in _paths(backend):
            if path is not None:
                monkeypatch.setenv("PHA_CPU_ISA", path)
            out = run_backend(backend, tensors, index, activation, grad_out)
            for name, got, want in zip(("out", *ARGS), [out[0], *out[1]], [ref[0], *ref[1]]):
                what = f"{backend} {path or ''} {activation}: {name} with {value} in {where}"
                assert torch.equal(got.isnan(), want.isnan()), f"{what}: NaN pattern differs"
                assert torch.equal(got.isposinf(), want.isposinf()), f"{what}: +inf differs"
                assert torch.equal(got.isneginf(), want.isneginf()), f"{what}: -inf differs"
                finite = want.isfinite()
                tol = 1e-4 if dtype == torch.float32 else 6e-2
                torch.testing.assert_close(
                    got[finite].double(), want[finite], rtol=tol, atol=tol, msg=what
                )


@settings(max_examples=30, deadline=None)
@given(
    b=st.integers(1, 4),
    t=st.integers(1, 6),
    d=st.integers(1, 40),
    r=st.integers(1, 24),
    g=st.integers(1, 5),
    indexed=st.booleans(),
    activation=st.sampled_from(ACTIVATIONS),
    seed=st.integers(0, 2**16),
)
def test_fuzz_cpp(b, t, d, r, g, indexed, activation, seed):
    require("cpp", "hyper_adapter")
    torch.manual_seed(seed)
    check_backend("cpp", b, t, d, r, g if indexed else b, torch.float32, activation, indexed)


@pytest.mark.parametrize("backend", ["cpp", "triton"])
@pytest.mark.parametrize("indexed", [False, True])
def test_opcheck(backend, indexed):
    require(backend, "hyper_adapter")
    tensors, index = make_inputs(3, 2, 16, 16, 2 if indexed else 3, indexed=indexed)
    tensors = [t.requires_grad_(True) for t in tensors]
    args = (*tensors, index, "gelu", backend, True)
    torch.library.opcheck(torch.ops.pha.hyper_adapter_fwd.default, args)


class _TaskAdapter(torch.nn.Module):
    def __init__(self, tasks, d, r):
        super().__init__()
        self.w_down = torch.nn.Parameter(torch.randn(tasks, d, r) / d**0.5)
        self.b_down = torch.nn.Parameter(torch.zeros(tasks, r))
        self.w_up = torch.nn.Parameter(torch.randn(tasks, r, d) / r**0.5)
        self.b_up = torch.nn.Parameter(torch.zeros(tasks, d))

    def forward(self, x, task_ids):
        y = pha.ops.hyper_adapter(x, self.w_down, self.b_down, self.w_up, self.b_up, index=task_ids)
        return (x + y).square().mean()


def test_torch_compile_fullgraph():
    require("cpp", "hyper_adapter")
    model = _TaskAdapter(3, 16, 8)
    x, ids = torch.randn(4, 5, 16), torch.tensor([2, 0, 2, 1])
    eager = model(x, ids)
    eager_grads = torch.autograd.grad(eager, list(model.parameters()))
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    got = compiled(x, ids)
    got_grads = torch.autograd.grad(got, list(model.parameters()))
    torch.testing.assert_close(got, eager)
    for a, b in zip(got_grads, eager_grads):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("backend", ["reference", "cpp"])
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_autocast_bf16_with_fp32_weights(backend, compiled):
    """Mixed precision: under CPU autocast a bf16 activation meets fp32 master weights; the
    op runs in bf16 and the weights' gradients come back in fp32 (also through
    torch.compile(fullgraph=True))."""
    if backend != "reference":
        require(backend, "hyper_adapter")
    model = _TaskAdapter(3, 16, 8)
    x, ids = torch.randn(4, 5, 16), torch.tensor([2, 0, 2, 1])
    params = list(model.parameters())

    def adapter(x):
        return pha.ops.hyper_adapter(x, *params, index=ids, backend=backend)

    fn = torch.compile(adapter, fullgraph=True, backend="aot_eager") if compiled else adapter
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fn(x.bfloat16())
    assert out.dtype == torch.bfloat16
    grads = torch.autograd.grad(out.float().square().sum(), params)
    assert all(g.dtype == torch.float32 and g.isfinite().all() for g in grads)
    ref = reference.hyper_adapter(x.bfloat16(), *(p.bfloat16() for p in params), index=ids)
    torch.testing.assert_close(out, ref, rtol=2e-2, atol=2e-2)


def test_compute_dtype():
    x = torch.randn(2, 3, 4)
    assert hyper_adapter_dtype(x) == torch.float32
    assert hyper_adapter_dtype(x.double()) == torch.float64
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert hyper_adapter_dtype(x) == torch.bfloat16
        assert hyper_adapter_dtype(x.bfloat16()) == torch.bfloat16
        assert hyper_adapter_dtype(x.double()) == torch.float64


@pytest.mark.parametrize("backend", ["reference", "cpp"])
def test_generated_weights_reach_the_op_uncast_under_autocast(backend):
    """Under autocast an fp32 activation meets bf16 weights from an autocast hypernetwork:
    apply_generated_adapter hands them to the op as they are (only x is cast), with the
    output and gradients of the fp32 round trip it used to make (an exact one)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from pha.methods.generated import ADAPTER_TENSORS, apply_generated_adapter

    if backend != "reference":
        require(backend, "hyper_adapter")

    class CountCasts(TorchDispatchMode):
        casts = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.casts += func is torch.ops.aten._to_copy.default
            return func(*args, **(kwargs or {}))

    (x, *tensors), _ = make_inputs(4, 5, 16, 8, 3)
    index = torch.tensor([2, 0, 2, 1])
    leaves = [t.bfloat16()[None].requires_grad_() for t in tensors]  # [sites=1, G, ...]
    weights = dict(zip(ADAPTER_TENSORS, leaves))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with CountCasts() as counter:
            out = apply_generated_adapter(x, weights, 0, index, "relu", backend)
        assert counter.casts == 1  # x alone
        round_trip = [w[0].float() for w in leaves]
        ref = pha.ops.hyper_adapter(x, *round_trip, index=index, backend=backend)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    grads = torch.autograd.grad(out.float().square().sum(), leaves)
    ref_grads = torch.autograd.grad(ref.float().square().sum(), leaves)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_eager_path_is_the_custom_op(dtype):
    """Plain eager calls run the backend through _EagerHyperAdapter, under a dispatch mode
    through the custom ops: the same launches, so the same bits, forward and every grad."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from pha.ops.hyper_adapter import _needs_custom_op

    require("cpp", "hyper_adapter")

    class Seen(TorchDispatchMode):
        ops: set = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.add(func)
            return func(*args, **(kwargs or {}))

    tensors, index = make_inputs(5, 3, 19, 6, 3, dtype, indexed=True)
    assert not _needs_custom_op(tuple(tensors))
    grad_out = torch.randn(5, 3, 19, dtype=dtype)
    eager = run_backend("cpp", tensors, index, "gelu", grad_out)
    with Seen() as seen:
        assert _needs_custom_op(tuple(tensors))
        custom = run_backend("cpp", tensors, index, "gelu", grad_out)
    assert torch.ops.pha.hyper_adapter_fwd.default in seen.ops
    assert torch.ops.pha.hyper_adapter_bwd.default in seen.ops
    for a, b in zip([eager[0], *eager[1]], [custom[0], *custom[1]]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_flop_counter_sees_the_eager_call():
    from torch.utils.flop_counter import FlopCounterMode

    require("cpp", "hyper_adapter")
    (x, *weights), index = make_inputs(4, 5, 16, 8, 3, indexed=True)
    x.requires_grad_(True)
    with FlopCounterMode(display=False) as counter:
        pha.ops.hyper_adapter(x, *weights, index=index, backend="cpp").sum().backward()
    assert counter.get_total_flops() == 12 * 4 * 5 * 16 * 8


def test_eager_backward_is_once_differentiable():
    require("cpp", "hyper_adapter")
    (x, *weights), _ = make_inputs(2, 3, 16, 8, 2)
    x.requires_grad_(True)
    out = pha.ops.hyper_adapter(x, *weights, backend="cpp")
    (gx,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        gx.sum().backward()


def test_no_grad_path_matches():
    require("cpp", "hyper_adapter")
    tensors, index = make_inputs(3, 4, 16, 8, 2, indexed=True)
    with torch.no_grad():
        fast = pha.ops.hyper_adapter(*tensors, index=index, backend="cpp")
    torch.testing.assert_close(
        fast, reference.hyper_adapter(*tensors, index=index), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("backend", ["reference", "cpp", "triton"])
class TestErrors:
    def _inputs(self):
        return make_inputs(3, 2, 8, 4, 3)[0]

    def test_index_out_of_range(self, backend):
        x, wd, bd, wu, bu = self._inputs()
        for bad in ([0, 3, 1], [0, -1, 1]):
            with pytest.raises(ValueError, match=r"index values must lie in \[0, 3\)"):
                pha.ops.hyper_adapter(x, wd, bd, wu, bu, index=torch.tensor(bad), backend=backend)

    def test_index_wrong_length(self, backend):
        x, wd, bd, wu, bu = self._inputs()
        with pytest.raises(ValueError, match=r"index must have shape \[3\]"):
            pha.ops.hyper_adapter(x, wd, bd, wu, bu, index=torch.tensor([0, 1]), backend=backend)

    def test_index_dtype(self, backend):
        x, wd, bd, wu, bu = self._inputs()
        with pytest.raises(TypeError, match="index must be an integer tensor"):
            pha.ops.hyper_adapter(
                x, wd, bd, wu, bu, index=torch.tensor([0.0, 1.0, 2.0]), backend=backend
            )

    def test_shape_mismatch(self, backend):
        x, wd, bd, wu, bu = self._inputs()
        with pytest.raises(ValueError, match=r"w_up must have shape \[G=3, r=4, d=8\]"):
            pha.ops.hyper_adapter(x, wd, bd, wu[:, :, :7], bu, backend=backend)
        with pytest.raises(ValueError, match=r"w_down must have shape \[G, d=8, r\]"):
            pha.ops.hyper_adapter(x, wd[:, :5], bd, wu, bu, backend=backend)
        with pytest.raises(ValueError, match=r"must equal x.shape\[0\]"):
            pha.ops.hyper_adapter(x, wd[:2], bd[:2], wu[:2], bu[:2], backend=backend)
        with pytest.raises(ValueError, match=r"x must have shape \[B, T, d\]"):
            pha.ops.hyper_adapter(x[0], wd, bd, wu, bu, backend=backend)

    def test_dtype_mismatch(self, backend):
        x, wd, bd, wu, bu = self._inputs()
        with pytest.raises(TypeError, match="share one dtype"):
            pha.ops.hyper_adapter(x.double(), wd, bd, wu, bu, backend=backend)
        with pytest.raises(TypeError, match="x must have dtype"):
            pha.ops.hyper_adapter(x.int(), wd, bd, wu, bu, backend=backend)

    def test_device_mismatch(self, backend):
        x, wd, bd, wu, bu = self._inputs()
        with pytest.raises(ValueError, match="one device"):
            pha.ops.hyper_adapter(x, wd.to("meta"), bd, wu, bu, backend=backend)

    def test_bad_activation(self, backend):
        x, wd, bd, wu, bu = self._inputs()
        with pytest.raises(ValueError, match="activation must be one of"):
            pha.ops.hyper_adapter(x, wd, bd, wu, bu, activation="tanh", backend=backend)


def test_unknown_or_unavailable_backend():
    x, wd, bd, wu, bu = make_inputs(2, 2, 4, 2, 2)[0]
    with pytest.raises(ValueError, match="backend must be one of"):
        pha.ops.hyper_adapter(x, wd, bd, wu, bu, backend="fortran")
    if not pha.ops.backends()["cuda"]:
        with pytest.raises(RuntimeError, match="backend 'cuda' is not available"):
            pha.ops.hyper_adapter(x, wd, bd, wu, bu, backend="cuda")


def test_backends_report():
    report = pha.ops.backends()
    assert set(report) == {"reference", "cpp", "triton", "cuda"}
    assert report["reference"] is True

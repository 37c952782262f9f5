"""pha.modules: Adapter, HyperNetwork, InstanceRetriever / masked_mean, PrototypeBank."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from method_utils import one_thread  # noqa: F401  (autouse fixture)

from pha.modules import Adapter, HyperNetwork, InstanceRetriever, PrototypeBank, masked_mean
from pha.ops import reference


def test_shared_adapter_is_the_bottleneck_formula():
    adapter = Adapter(12, 5, activation="gelu", init_gain=1.0)
    x = torch.randn(3, 4, 12)
    w_down, b_down, w_up, b_up = (p[0] for p in adapter.parameters())
    expected = F.gelu(x @ w_down + b_down, approximate="tanh") @ w_up + b_up
    torch.testing.assert_close(adapter(x), expected)


def test_per_task_adapter_picks_each_instances_set():
    adapter = Adapter(12, 5, num_sets=3, init_gain=1.0)
    with torch.no_grad():
        adapter.b_up.normal_()
    x, index = torch.randn(4, 3, 12), torch.tensor([2, 0, 2, 1])
    expected = reference.hyper_adapter(x, *adapter.parameters(), index=index)
    torch.testing.assert_close(adapter(x, index), expected)
    with pytest.raises(ValueError, match="3 weight sets: pass index"):
        adapter(x)


def test_adapter_init_is_tiny_xavier_with_zero_biases():
    adapter = Adapter(384, 64, num_sets=2)
    bound = 1e-4 * math.sqrt(6 / (384 + 64))  # xavier_uniform of one [d, r] matrix
    for w in (adapter.w_down, adapter.w_up):
        assert 0.5 * bound < w.abs().max() <= bound
    assert not adapter.b_down.any() and not adapter.b_up.any()
    with pytest.raises(ValueError, match="must be > 0"):
        Adapter(0, 4)


SHAPES = {"w_down": (6, 3), "b_down": (3,), "w_up": (3, 6), "b_up": (6,)}


@pytest.mark.parametrize("per_site", [False, True])
def test_hypernetwork_shapes_and_site_order(per_site):
    net = HyperNetwork(5, SHAPES, site_sizes=(4, 2), site_embed_dim=7, hidden_dim=9, out_dim=8,
                       per_site=per_site, init="normal")  # fmt: skip
    out = net(torch.randn(3, 5))
    assert {k: tuple(v.shape) for k, v in out.items()} == {k: (8, 3, *s) for k, s in SHAPES.items()}
    if not per_site:  # site s = layer * 2 + position: [E_layer[l] ; E_pos[p]]
        sites = net.site_inputs()
        layer_emb, pos_emb = (e.weight for e in net.site_embeddings)
        torch.testing.assert_close(sites[5], torch.cat([layer_emb[2], pos_emb[1]]))


def test_hypernetwork_shared_generator_matches_its_formula():
    net = HyperNetwork(5, SHAPES, site_sizes=(3,), site_embed_dim=4, hidden_dim=9, out_dim=8)
    with torch.no_grad():
        for head in net.generator.heads.values():
            head.bias.normal_()
    cond = torch.randn(2, 5)
    out = net(cond)
    trunk = net.generator.trunk
    for layer in range(3):
        for i in range(2):
            x = torch.cat([cond[i], net.site_embeddings[0].weight[layer]])
            u = F.layer_norm(
                trunk[2](torch.relu(trunk[0](x))), (8,), trunk[3].weight, trunk[3].bias, 1e-6
            )
            w_up = net.generator.heads["w_up"](u).view(3, 6)
            torch.testing.assert_close(out["w_up"][layer, i], w_up)


def test_hypernetwork_hyperfanin_init():
    d, r, o = 48, 8, 64
    net = HyperNetwork(16, {"w_up": (r, d), "w_down": (d, r), "b_up": (d,)}, out_dim=o)
    heads = net.generator.heads
    for name, fan in (("w_up", r), ("w_down", d), ("b_up", 1)):
        bound = 1e-3 * math.sqrt(3 / (o * fan))
        assert 0.9 * bound < heads[name].weight.abs().max() <= bound
        assert not heads[name].bias.any()


def test_hypernetwork_normal_init():
    net = HyperNetwork(16, {"w": (64, 64)}, init="normal")
    w = net.generator.heads["w"].weight
    assert abs(w.std().item() - 1e-2) < 1e-3 and not net.generator.heads["w"].bias.any()


def test_hypernetwork_errors():
    with pytest.raises(ValueError, match="init must be one of"):
        HyperNetwork(4, SHAPES, init="xavier")
    with pytest.raises(ValueError, match="at least one tensor"):
        HyperNetwork(4, {})
    with pytest.raises(ValueError, match="site_sizes"):
        HyperNetwork(4, SHAPES, site_sizes=(0,))
    with pytest.raises(ValueError, match=r"cond must have shape \[N, cond_dim\]"):
        HyperNetwork(4, SHAPES)(torch.randn(4))


def test_masked_mean_ignores_padding():
    h = torch.randn(3, 5, 4)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]])
    out = masked_mean(h, mask)
    torch.testing.assert_close(out[0], h[0, :2].mean(0))
    torch.testing.assert_close(out[1], h[1].mean(0))
    assert not out[2].any()  # an empty row gives 0, not NaN
    with pytest.raises(ValueError, match=r"mask must have shape \[3, 5\]"):
        masked_mean(h, mask[:, :4])


def test_retriever_is_pool_then_mlp():
    retriever = InstanceRetriever(8, 16, 4)
    h, mask = torch.randn(2, 3, 8), torch.tensor([[1, 1, 0], [1, 1, 1]])
    torch.testing.assert_close(retriever(h, mask), retriever.mlp(masked_mean(h, mask)))
    assert [type(m).__name__ for m in retriever.mlp] == ["Linear", "ReLU", "Linear"]


def test_prototypes_nearest_on_separable_data():
    bank = PrototypeBank(4, 8)
    z = bank.weight.detach()[torch.tensor([2, 0, 3, 1, 2])] * 3 + 0.05 * torch.randn(5, 8)
    ids, scores = bank.nearest(z)
    assert ids.tolist() == [2, 0, 3, 1, 2]
    torch.testing.assert_close(scores, F.normalize(z, dim=-1) @ F.normalize(bank.weight, dim=-1).T)


def test_prototypes_add():
    bank = PrototypeBank(3, 8)
    old = bank.weight.detach().clone()
    z = old[1] + 0.01 * torch.randn(4, 8)
    assert bank.add(z, "nearest") == 3
    torch.testing.assert_close(bank.weight[3], old[1])
    torch.testing.assert_close(bank.weight[:3], old)
    assert bank.add(torch.randn(2, 8), "mean") == 4 and len(bank) == 5
    torch.testing.assert_close(bank.weight[4].norm(), bank.weight[:4].norm(dim=-1).mean())
    with pytest.raises(ValueError, match="init must be"):
        bank.add(z, "random")
    with pytest.raises(ValueError, match=r"z must have shape \[n >= 1, 8\]"):
        bank.add(torch.randn(0, 8))


def test_hypernetwork_without_second_layer_is_the_hyperdecoders_generator():
    net = HyperNetwork(cond_dim=12, shapes={"w": (6, 4), "b": (4,)}, site_sizes=(3,),
                       site_embed_dim=10, hidden_dim=16, out_dim=None)  # fmt: skip
    trunk = net.generator.trunk
    assert [type(m).__name__ for m in trunk] == ["Linear", "ReLU"]
    assert net.generator.heads["w"].in_features == 16
    bound = 1e-3 * (3.0 / (16 * 6)) ** 0.5  # hyperfanin over the ReLU width
    assert float(net.generator.heads["w"].weight.abs().max()) <= bound
    out = net(torch.randn(5, 12))
    assert out["w"].shape == (3, 5, 6, 4) and out["b"].shape == (3, 5, 4)

"""HyperPELT: prefix injection (pha.backbones.attention_prefix), PrefixGenerator, the method.

Tiny random T5 / BERT / LLaMA / GPT-2 backbones (tests/tiny_backbones.py). The prefix
injection is checked against independent references: Hugging Face's own KV-cache path
(a cache pre-filled with the prefix, explicit position ids) for LLaMA / GPT-2, and a
hand-written attention for BERT / the T5 encoder (with T5's relative position bias).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from method_utils import norm_params, scramble, trainable
from tiny_backbones import FAMILIES, LAYERS, VOCAB, D, batch, tiny
from transformers import DynamicCache

import pha
from pha.backbones.attention_prefix import PrefixInjector, attention_sites
from pha.modules import HyperNetwork
from pha.modules.prefix import PrefixGenerator

TASKS = ["sst", "nli", "para"]
NUM_LABELS = [2, 3, 2]
# small widths so that every term of the parameter formula is distinguishable
P, R, TE, SE, HID, OUT, VD, VE = 3, 4, 8, 6, 12, 10, 5, 7
GENERATIVE = ("t5", "llama", "gpt2")


def make(family: str, seed: int = 0, loud: bool = True, **overrides) -> pha.PHAModel:
    cfg = pha.HyperPELTConfig(
        tasks=list(TASKS), num_labels=list(NUM_LABELS) if family == "bert" else None,
        prefix_length=P, adapter_dim=R, task_embed_dim=TE, site_embed_dim=SE,
        hypernet_hidden_dim=HID, hypernet_out_dim=OUT, **overrides,
    )  # fmt: skip
    model = pha.get_model(tiny(family, seed), cfg)
    if loud:  # the hyperfanin init makes prefixes and adapters tiny: make tasks matter
        scramble(model, std=0.3)
    return model


def num_layers(family: str) -> int:
    layers = LAYERS[family]
    return sum(layers) if isinstance(layers, tuple) else layers


def kv_dim(family: str) -> int:
    return D // 2 if family == "llama" else D  # the tiny LLaMA: 2 kv heads of width 8


# ---- prefix injection ------------------------------------------------------------------


def test_attention_sites():
    t5 = attention_sites(tiny("t5"))
    assert [s.cross for s in t5] == [False, False, False, True, False, True]
    assert all(s.name.startswith(("encoder.", "decoder.")) for s in t5)
    assert len(attention_sites(tiny("t5"), cross_attention=False)) == 4
    llama = attention_sites(tiny("llama"))
    assert [(s.num_kv_heads, s.head_dim) for s in llama] == [(2, 8)] * 4
    bert = attention_sites(tiny("bert"))
    assert [type(s.module).__name__ for s in bert] == ["BertSelfAttention"] * 4


def _random_prefixes(sites, b, p=P, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        tuple(torch.randn(b, s.num_kv_heads, p, s.head_dim, generator=g) for _ in range(2))
        for s in sites
    ]


def _run(model, family, input_ids, mask):
    if family == "t5":
        return model(input_ids, mask, decoder_input_ids=input_ids[:, :4]).logits
    out = model(input_ids, attention_mask=mask)
    return out.last_hidden_state if family == "bert" else out.logits


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family", FAMILIES)
def test_without_prefix_the_backbone_is_unchanged(family, attn):
    model = tiny(family)
    model.set_attn_implementation(attn)
    input_ids, mask, _ = batch(family)
    with torch.no_grad():
        before = _run(model, family, input_ids, mask)
        sites = attention_sites(model)
        prefixes = _random_prefixes(sites, input_ids.shape[0])
        active = [False]
        injector = PrefixInjector(model, sites, lambda i: prefixes[i] if active[0] else None)
        assert model.config._attn_implementation == f"pha_prefix_{attn}"
        torch.testing.assert_close(_run(model, family, input_ids, mask), before, rtol=0, atol=0)
        active[0] = True
        assert (_run(model, family, input_ids, mask) - before).abs().max() > 1e-2
        injector.remove()
        assert model.config._attn_implementation == attn
        torch.testing.assert_close(_run(model, family, input_ids, mask), before, rtol=0, atol=0)


@pytest.mark.parametrize("padded", [True, False])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_prefix_matches_hf_prefilled_cache(family, attn, padded):
    """HF's own path: a cache pre-filled with the prefix, the mask extended by P ones and
    explicit position ids 0.. for the real tokens (so RoPE / absolute positions are those
    of the unprefixed model). Unpadded, sdpa leaves the causal mask implicit (None)."""
    model = tiny(family)
    model.set_attn_implementation(attn)
    input_ids, mask, _ = batch(family)
    if not padded:
        mask = torch.ones_like(mask)
    b = input_ids.shape[0]
    sites = attention_sites(model)
    prefixes = _random_prefixes(sites, b)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=model.config)
    for i, (k, v) in enumerate(prefixes):
        cache.update(k.clone(), v.clone(), i)
    with torch.no_grad():
        expected = model(
            input_ids,
            attention_mask=torch.cat([torch.ones(b, P, dtype=mask.dtype), mask], 1),
            past_key_values=cache,
            position_ids=positions,
        ).logits
        PrefixInjector(model, sites, lambda i: prefixes[i])
        got = model(input_ids, attention_mask=mask, position_ids=positions).logits
        # without explicit position ids too: the prefix does not shift positions
        got_default = model(input_ids, attention_mask=mask).logits
    valid = mask.bool()
    torch.testing.assert_close(got[valid], expected[valid], rtol=1e-5, atol=1e-5)
    rows = mask.all(1)  # unpadded rows: default positions are 0..T-1 as well
    torch.testing.assert_close(got_default[rows], expected[rows], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family", ["bert", "t5"])
def test_prefix_matches_handwritten_attention(family, attn):
    """The first attention layer (BERT; T5's encoder, with its relative position bias,
    zero for the prefix columns) against softmax(q [P_k; k]^T + bias + mask) [P_v; v]."""
    model = tiny(family)
    model.set_attn_implementation(attn)
    input_ids, mask, _ = batch(family)
    b, t = input_ids.shape
    sites = attention_sites(model)
    site = sites[0]
    prefixes = _random_prefixes(sites, b)
    captured = {}
    site.module.register_forward_hook(
        lambda m, args, kwargs, out: captured.update(h=kwargs.get("hidden_states", args[0] if args else None), out=out[0]),
        with_kwargs=True,
    )  # fmt: skip
    PrefixInjector(model, sites, lambda i: prefixes[i])
    with torch.no_grad():
        _run(model, family, input_ids, mask)
        m, h = site.module, captured["h"]
        proj = (m.query, m.key, m.value) if family == "bert" else (m.q, m.k, m.v)
        q, k, v = (f(h).view(b, t, -1, site.head_dim).transpose(1, 2) for f in proj)
        k = torch.cat([prefixes[0][0], k], 2)
        v = torch.cat([prefixes[0][1], v], 2)
        scores = q @ k.transpose(-1, -2) * (site.head_dim**-0.5 if family == "bert" else 1.0)
        if family == "t5":
            scores = scores + F.pad(m.compute_bias(t, t), (P, 0))
        allowed = torch.cat([torch.ones(b, P, dtype=torch.bool), mask.bool()], 1)
        scores = scores.masked_fill(~allowed[:, None, None, :], float("-inf"))
        out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, -1)
        if family == "t5":
            out = m.o(out)
    torch.testing.assert_close(captured["out"], out, rtol=1e-5, atol=1e-5)


def test_injector_errors():
    model = tiny("llama")
    sites = attention_sites(model)
    injector = PrefixInjector(model, sites, lambda i: (torch.zeros(1, 3, 2, 8),) * 2)
    with pytest.raises(
        ValueError, match=r"prefix keys for model.layers.0.self_attn must have shape \[B, 2, P, 8\]"
    ):
        model(torch.ones(1, 4, dtype=torch.long))
    injector.remove()
    model.config._attn_implementation_internal = "flex_attention"
    with pytest.raises(ValueError, match="attn_implementation"):
        PrefixInjector(model, sites, lambda i: None)
    model = tiny("bert")
    model.set_attn_implementation = lambda name: None  # a model HF cannot switch (it only warns)
    with pytest.raises(TypeError, match="did not route"):
        PrefixInjector(model, attention_sites(model), lambda i: None)
    with pytest.raises(ValueError, match="divide"):
        model = tiny("gpt2")
        sites = attention_sites(model)
        PrefixInjector(model, sites, lambda i: _random_prefixes(sites, 2)[i])
        model(torch.ones(3, 4, dtype=torch.long))


# ---- hypernetwork pieces ----------------------------------------------------------------


def test_hypernetwork_names_and_sites_select_from_the_full_output():
    shapes = {"a": (3, 2), "b": (5,), "c": (4,)}
    for per_site in (False, True):
        net = HyperNetwork(
            6,
            shapes,
            site_sizes=(3, 2),
            site_embed_dim=4,
            hidden_dim=8,
            out_dim=5,
            per_site=per_site,
        )
        cond = torch.randn(7, 6)
        full = net(cond)
        part = net(cond, names=["c", "a"], sites=[5, 0, 3])
        assert list(part) == ["c", "a"]
        for name in part:
            torch.testing.assert_close(part[name], full[name][[5, 0, 3]])
        with pytest.raises(ValueError, match="names must be among"):
            net(cond, names=["zzz"])
        with pytest.raises(ValueError, match=r"sites must lie in \[0, 6\)"):
            net(cond, sites=[6])


def test_prefix_generator_layout():
    gen = PrefixGenerator(2, [(2, 3), (3, 2)], hypernet_sites=[1, 4])
    assert gen.shapes() == {"prefix_key": (12,), "prefix_value": (12,)}
    net = HyperNetwork(4, gen.shapes(), site_sizes=(5,), site_embed_dim=3, hidden_dim=6, out_dim=5)
    cond = torch.randn(3, 4)
    generated = gen.generate(net, cond)
    full = net(cond)
    index = torch.tensor([2, 0, 0, 1])
    k, v = gen.prefix(generated, 1, index)  # layer 1: 3 kv heads of width 2, site 4
    assert k.shape == v.shape == (4, 3, 2, 2)
    for b, g in enumerate(index.tolist()):
        for p in range(2):  # position p of head h is flat [(p * heads + h) * head_dim:]
            for h in range(3):
                at = slice((p * 3 + h) * 2, (p * 3 + h) * 2 + 2)
                torch.testing.assert_close(k[b, h, p], full["prefix_key"][4, g, at])
                torch.testing.assert_close(v[b, h, p], full["prefix_value"][4, g, at])
    per_instance, _ = gen.prefix(generated, 0, None)
    assert per_instance.shape == (3, 2, 2, 3)
    with pytest.raises(ValueError, match="share kv_heads"):
        PrefixGenerator(2, [(2, 3), (2, 2)], hypernet_sites=[0, 1])


# ---- the method ---------------------------------------------------------------------------


def expected_trainable(family: str, visual: bool = False) -> int:
    d = D
    cond = TE + (VE if visual else 0)
    trunk = (cond + 2 * SE) * HID + HID + HID * OUT + OUT + 2 * OUT  # Linear, Linear, LayerNorm
    outputs = [d * R, R, R * d, d, P * kv_dim(family), P * kv_dim(family)]
    hypernet = trunk + sum(OUT * n + n for n in outputs) + (num_layers(family) + 3) * SE
    embeddings = len(TASKS) * TE + ((VD * VE + VE) if visual else 0)
    heads = sum(d * n + n for n in NUM_LABELS) if family == "bert" else 0
    return hypernet + embeddings + norm_params(family, d) + heads


VISUAL = {"visual_dim": VD, "visual_embed_dim": VE}


@pytest.mark.parametrize("family", FAMILIES)
def test_only_intended_parameters_train(family):
    for visual in (False, True):
        model = make(family, loud=False, **(VISUAL if visual else {}))
        params = trainable(model)
        norms = {id(p) for m in model.backbone.layer_norms() for p in m.parameters()}
        for name, p in params.items():
            if name.startswith("base_model."):
                assert id(p) in norms, name
            else:
                assert name.split(".")[0] in (
                    "hypernet",
                    "task_embeddings",
                    "visual_proj",
                    "heads",
                ), name
        assert len(norms) and norms <= {id(p) for p in params.values()}
        assert sum(p.numel() for p in params.values()) == expected_trainable(family, visual)


def backbone_output(model, family, input_ids, mask, task_ids, **kw):
    """What the HF model itself returned inside the wrapper's call (hidden state / logits)."""
    seen = []
    handle = model.base_model.register_forward_hook(lambda m, a, out: seen.append(out))
    try:
        model(input_ids, mask, task_ids=task_ids, **kw)
    finally:
        handle.remove()
    out = seen[-1]
    return out.last_hidden_state if family == "bert" else out.logits


def t5_decoder_inputs(family, input_ids):
    return {"decoder_input_ids": input_ids[:, :4]} if family == "t5" else {}


@pytest.mark.parametrize("family", FAMILIES)
def test_prefixes_change_the_output_and_disabling_recovers_the_backbone(family):
    input_ids, mask, _ = batch(family)
    with torch.no_grad():
        expected = _run(tiny(family), family, input_ids, mask)
        model = make(family)
        for name in ("w_down", "b_down", "w_up", "b_up"):  # adapters exactly 0: prefixes only
            model.hypernet.generator.heads[name].weight.zero_()
            model.hypernet.generator.heads[name].bias.zero_()
        task_ids = torch.tensor([0, 1, 2, 0, 1, 2])
        kw = t5_decoder_inputs(family, input_ids)
        with_prefix = backbone_output(model, family, input_ids, mask, task_ids, **kw)
        assert (with_prefix - expected).abs().max() > 1e-2
        with model.disable_adapter():
            without = backbone_output(model, family, input_ids, mask, task_ids, **kw)
    # rows without left padding: the wrapper derives decoder-only position ids from the
    # mask, so a left-padded row's tokens sit at other positions than in `expected`
    same_positions = mask[:, 0].bool()
    assert same_positions.sum() >= 5
    torch.testing.assert_close(without[same_positions], expected[same_positions], rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_mixed_task_batch_equals_per_instance_runs(family):
    model = make(family)
    input_ids, mask, labels = batch(family)
    task_ids = torch.tensor([2, 0, 1, 1, 0, 2])
    kw = t5_decoder_inputs(family, input_ids)
    with torch.no_grad():
        mixed = model(input_ids, mask, task_ids=task_ids, **kw).logits
        for i in range(len(task_ids)):
            row = slice(i, i + 1)
            single_kw = {k: v[row] for k, v in kw.items()}
            single = model(input_ids[row], mask[row], task_ids=task_ids[row], **single_kw).logits
            torch.testing.assert_close(mixed[row], single, rtol=1e-4, atol=1e-5)
        other = model(input_ids, mask, task_ids=(task_ids + 1) % 3, **kw).logits
    assert (other - mixed).abs().max() > 1e-2  # the task matters: the test can fail


@pytest.mark.parametrize("beams", [1, 3])
@pytest.mark.parametrize("family", GENERATIVE)
def test_mixed_task_generate_equals_per_instance_generate(family, beams):
    model = make(family)
    input_ids, mask, _ = batch(family, b=3)
    task_ids = torch.tensor([1, 0, 2])
    kw = dict(max_new_tokens=5, do_sample=False, num_beams=beams, pad_token_id=0)
    mixed = model.generate(input_ids, mask, task_ids=task_ids, **kw)
    for i in range(len(task_ids)):
        row = slice(i, i + 1)
        single = model.generate(input_ids[row], mask[row], task_ids=task_ids[row], **kw)
        n = min(single.shape[1], mixed.shape[1])
        assert torch.equal(mixed[i, :n], single[0, :n]), (i, mixed[i], single[0])
    others = [
        model.generate(input_ids, mask, task_ids=torch.full_like(task_ids, k), **kw)
        for k in range(3)
    ]
    assert any(not torch.equal(others[0], o) for o in others[1:])  # tasks generate differently


@pytest.mark.parametrize("family", GENERATIVE)
def test_cached_generation_equals_full_recomputation(family):
    """Incremental decoding (prefix + cache, one query) against recomputing the whole
    sequence each step (prefix + an implicit causal mask, q == kv)."""
    model = make(family)
    input_ids, mask, _ = batch(family, b=3)
    kw = dict(task_ids=torch.tensor([0, 2, 1]), max_new_tokens=4, do_sample=False, pad_token_id=0)
    cached = model.generate(input_ids, mask, **kw)
    assert torch.equal(cached, model.generate(input_ids, mask, use_cache=False, **kw))


@pytest.mark.parametrize("family", FAMILIES)
def test_save_and_load_round_trip(family, tmp_path):
    model = make(family, **VISUAL)
    model.save_pretrained(tmp_path)
    loaded = pha.PHAModel.from_pretrained(tiny(family), tmp_path)
    assert type(loaded) is type(model) and loaded.method_config == model.method_config
    saved = loaded.trainable_state_dict()
    for name, p in trainable(model).items():
        torch.testing.assert_close(saved[name], p, rtol=0, atol=0)
    input_ids, mask, _ = batch(family)
    task_ids = torch.tensor([0, 1, 2, 2, 1, 0])
    visual = torch.randn(6, VD)
    kw = t5_decoder_inputs(family, input_ids)
    with torch.no_grad():
        for v in (None, visual):
            a = model(input_ids, mask, task_ids=task_ids, visual_features=v, **kw).logits
            b = loaded(input_ids, mask, task_ids=task_ids, visual_features=v, **kw).logits
            torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_gradients_reach_the_hypernetwork_embeddings_and_norms(family):
    model = make(family, **VISUAL)
    input_ids, mask, labels = batch(family)
    task_ids = torch.tensor([0, 1, 0, 1, 0, 1])  # task 2 absent: its embedding gets none
    model(
        input_ids, mask, labels=labels, task_ids=task_ids, visual_features=torch.randn(6, VD)
    ).loss.backward()
    grads = {n: p.grad for n, p in trainable(model).items()}
    for name, g in grads.items():  # site embeddings and task rows: checked row by row below
        if name.startswith(("hypernet.generator", "visual_proj.", "base_model.")):
            assert g is not None and g.abs().sum() > 0, name
    emb = grads["task_embeddings.weight"]
    assert emb[:2].abs().sum(1).min() > 0 and emb[2].abs().sum() == 0
    used = grads["hypernet.site_embeddings.0.weight"].abs().sum(1)  # layer embeddings
    assert (used > 0).all()
    blocks = grads["hypernet.site_embeddings.1.weight"].abs().sum(1)  # self, cross, FFN
    assert blocks[0] > 0 and blocks[2] > 0 and (blocks[1] > 0) == (family == "t5")


@pytest.mark.parametrize("family", ["t5", "bert", "llama"])
def test_visual_conditioning(family):
    model = make(family, **VISUAL)
    input_ids, mask, labels = batch(family)
    task_ids = torch.tensor([0, 1, 2, 0, 1, 2])
    kw = t5_decoder_inputs(family, input_ids)
    visual = torch.randn(6, VD)
    with torch.no_grad():
        text_only = model(input_ids, mask, task_ids=task_ids, **kw).logits
        a = model(input_ids, mask, task_ids=task_ids, visual_features=visual, **kw).logits
        b = model(input_ids, mask, task_ids=task_ids, visual_features=visual.flip(0), **kw).logits
        assert (a - b).abs().max() > 1e-2 and (a - text_only).abs().max() > 1e-2
        for i in range(6):  # instance-specific weights: a batch equals its rows run alone
            row = slice(i, i + 1)
            single = model(
                input_ids[row],
                mask[row],
                task_ids=task_ids[row],
                visual_features=visual[row],
                **{k: v[row] for k, v in kw.items()},
            ).logits
            torch.testing.assert_close(a[row], single, rtol=1e-4, atol=1e-5)
    model(input_ids, mask, labels=labels, task_ids=task_ids, visual_features=visual).loss.backward()
    assert model.visual_proj.weight.grad.abs().sum() > 0
    if family != "bert":
        out = model.generate(
            input_ids[:2],
            mask[:2],
            task_ids=task_ids[:2],
            visual_features=visual[:2],
            max_new_tokens=3,
            num_beams=2,
            pad_token_id=0,
        )
        assert out.shape[0] == 2


def test_errors():
    model = make("t5", **VISUAL)
    input_ids, mask, _ = batch("t5")
    with pytest.raises(TypeError, match="visual_features must be a floating-point tensor"):
        model(input_ids, mask, task_ids=torch.zeros(6, dtype=torch.long), visual_features=[0.0] * 5)
    with pytest.raises(ValueError, match=r"visual_features must have shape \[6, 5\]"):
        model(
            input_ids,
            mask,
            task_ids=torch.zeros(6, dtype=torch.long),
            visual_features=torch.randn(6, 4),
        )
    with pytest.raises(ValueError, match="needs task_ids"):
        model(input_ids, mask)
    with pytest.raises(ValueError, match="visual_dim=None"):
        make("t5")(
            input_ids,
            mask,
            task_ids=torch.zeros(6, dtype=torch.long),
            visual_features=torch.randn(6, VD),
        )
    with pytest.raises(ValueError, match="prefix_length must be an integer >= 1"):
        pha.HyperPELTConfig(tasks=["a"], prefix_length=0)
    with pytest.raises(ValueError, match="adapter_activation"):
        pha.HyperPELTConfig(tasks=["a"], adapter_activation="tanh")
    with pytest.raises(ValueError, match="init='mean'"):
        model.add_task("new", {"input_ids": input_ids, "attention_mask": mask})


def test_add_task_starts_from_the_mean_task_embedding():
    model = make("llama")
    input_ids, mask, _ = batch("llama")
    new = model.add_task("new", {"input_ids": input_ids, "attention_mask": mask}, init="mean")
    assert new == 3 and model.task_embeddings.weight.shape == (4, TE)
    torch.testing.assert_close(
        model.task_embeddings.weight[3], model.task_embeddings.weight[:3].mean(0)
    )
    with torch.no_grad():
        model(input_ids, mask, task_ids=torch.full((6,), new))


def test_a_dozen_steps_lower_the_loss_on_a_toy_multi_task_problem():
    """T5: task k maps any input to the constant target [3 + k] * 3."""
    model = make("t5", loud=False)
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(3, VOCAB, (12, 6), generator=g)
    mask = torch.ones_like(input_ids)
    task_ids = torch.arange(12) % 3
    labels = (3 + task_ids)[:, None].repeat(1, 3)
    opt = torch.optim.Adam(trainable(model).values(), lr=3e-2)
    losses = []
    for _ in range(12):
        loss = model(input_ids, mask, labels=labels, task_ids=task_ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("family", ["t5", "llama"])
def test_gradient_checkpointing_gives_the_same_gradients(family):
    """The recomputation in backward reads the prefixes of the call being differentiated."""
    grads = []
    for checkpointing in (False, True):
        model = make(family).train()
        if checkpointing:
            base = model.base_model
            (
                getattr(base, "activation_checkpointing_enable", None)
                or base.gradient_checkpointing_enable
            )()
        input_ids, mask, labels = batch(family)
        model(
            input_ids, mask, labels=labels, task_ids=torch.tensor([0, 1, 2, 2, 1, 0])
        ).loss.backward()
        grads.append({n: p.grad for n, p in trainable(model).items()})
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, msg=name)

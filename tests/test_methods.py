"""The methods on tiny random T5 / BERT / LLaMA / GPT-2: parameters, gradients,
mixed-task batches, save/load, retrieval, errors, and a few optimisation steps."""

from __future__ import annotations

import pytest
import torch
import transformers
from method_utils import (
    CONDITIONED,
    METHOD_NAMES,
    NUM_LABELS,
    TASKS,
    expected_trainable,
    make_config,
    one_thread,  # noqa: F401  (autouse fixture)
    scramble,
    trainable,
)
from tiny_backbones import FAMILIES, batch, tiny

import pha

TASK_IDS = torch.tensor([0, 1, 2, 1, 0, 2])


def build(method, family, **overrides):
    return pha.get_model(tiny(family), make_config(method, family, **overrides))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", METHOD_NAMES)
def test_trainable_parameters_match_the_formulas(method, family):
    backbone_params = sum(p.numel() for p in tiny(family).parameters())
    model = build(method, family)
    params = trainable(model)
    assert sum(p.numel() for p in params.values()) == expected_trainable(
        method, family, backbone_params
    )
    allowed = {
        "pha": ("lower_adapters.", "retriever.", "prototypes.", "hypernet.", "heads."),
        "hyperformer": ("task_embeddings.", "hypernet.", "heads.", "base_model."),
        "hyperdecoder": ("lower_adapters.", "retriever.", "hypernet.", "heads."),
        "adapter": ("adapters.", "heads."),
        "adapter_per_task": ("adapters.", "heads."),
        "full": ("base_model.", "heads."),
    }[method]
    assert all(name.startswith(allowed) for name in params), sorted(params)
    if method == "hyperformer":  # of the backbone, only its norms
        backbone = [n for n in params if n.startswith("base_model.")]
        assert backbone and all("norm" in n.lower() or "ln" in n for n in backbone), backbone


@pytest.mark.parametrize("family", FAMILIES)
def test_backbone_keeps_its_parameter_names(family):
    names = {n for n, _ in tiny(family).named_parameters()}
    model = build("pha", family)
    wrapped = {n.removeprefix("base_model.") for n, _ in model.base_model.named_parameters()}
    assert names == wrapped


@pytest.mark.parametrize("family", FAMILIES)
def test_pha_gradients_reach_retriever_prototypes_and_lower_adapters(family):
    model = build("pha", family)
    ids, mask, labels = batch(family)
    out = model(ids, mask, labels=labels, task_ids=TASK_IDS)
    assert set(out.aux_losses) == {"ins", "pro"}
    out.loss.backward()
    for prefix in ("retriever.", "prototypes.", "lower_adapters.", "hypernet."):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(prefix)]
        assert grads and all(g is not None for g in grads), prefix
        assert sum(g.abs().sum() for g in grads) > 0, prefix
    assert all(p.grad is None for p in model.base_model.parameters())


@pytest.mark.parametrize(
    "trains, moved_groups",
    [
        ("all", {"retriever.", "prototypes.", "lower_adapters."}),
        ("retriever_prototypes", {"retriever.", "prototypes."}),
        ("retriever", {"retriever."}),
    ],
)
def test_pha_contrastive_trains_chooses_what_the_contrastive_losses_move(trains, moved_groups):
    model = build("pha", "bert", contrastive_trains=trains)
    ids, mask, labels = batch("bert")
    out = model(ids, mask, labels=labels, task_ids=TASK_IDS)
    sum(out.aux_losses.values()).backward()
    moved = {
        prefix
        for prefix in ("retriever.", "prototypes.", "lower_adapters.", "hypernet.", "heads.")
        for n, p in model.named_parameters()
        if n.startswith(prefix) and p.grad is not None and p.grad.abs().sum() > 0
    }
    assert moved == moved_groups


def test_pha_contrastive_trains_retriever_leaves_the_task_path_as_without_the_losses():
    """With contrastive_trains="retriever" (and no gradient clipping) every parameter but
    the retriever's trains exactly as with both contrastive weights 0, while the retriever
    still learns."""

    def train(**overrides):
        torch.manual_seed(0)
        model = build("pha", "bert", **overrides)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        ids, mask, labels = batch("bert")
        for _ in range(3):
            opt.zero_grad()
            model(ids, mask, labels=labels, task_ids=TASK_IDS).loss.backward()
            opt.step()
        return dict(model.named_parameters())

    side = train(contrastive_trains="retriever")
    off = train(ins_weight=0.0, pro_weight=0.0)
    for name, p in side.items():
        if name.startswith("retriever."):
            assert not torch.equal(p, off[name]), name
        else:
            torch.testing.assert_close(p, off[name], rtol=0, atol=0, msg=name)


def test_pha_contrastive_trains_rejects_an_unknown_value():
    with pytest.raises(ValueError, match="contrastive_trains"):
        make_config("pha", "bert", contrastive_trains="features")


def test_pha_total_loss_is_task_loss_plus_weighted_contrastive_losses():
    model = build("pha", "bert", label_smoothing=0.1)
    ids, mask, labels = batch("bert")
    out = model(ids, mask, labels=labels, task_ids=TASK_IDS)
    z = out.z
    ins = pha.ops.supcon_loss(z, TASK_IDS, 0.1)
    pro = pha.ops.prototype_loss(z, model.prototypes.weight, TASK_IDS, 0.1)
    torch.testing.assert_close(out.aux_losses["ins"], 0.1 * ins)
    torch.testing.assert_close(out.aux_losses["pro"], 0.1 * pro)
    task = sum(
        torch.nn.functional.cross_entropy(
            out.logits[i : i + 1, : NUM_LABELS[k]], labels[i : i + 1], label_smoothing=0.1
        )
        for i, k in enumerate(TASK_IDS.tolist())
    ) / len(TASK_IDS)
    torch.testing.assert_close(out.loss, task + 0.1 * ins + 0.1 * pro)


def test_encoder_logits_mask_the_classes_a_task_lacks():
    model = build("adapter", "bert")
    ids, mask, _ = batch("bert")
    logits = model(ids, mask, task_ids=TASK_IDS).logits
    assert logits.shape == (6, max(NUM_LABELS))
    lacking = torch.tensor([NUM_LABELS[k] < 3 for k in TASK_IDS.tolist()])
    assert (logits[lacking, 2] == torch.finfo(logits.dtype).min).all()
    assert (logits[~lacking, 2] > -1e6).all()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", CONDITIONED)
def test_mixed_task_batch_equals_each_instance_alone(method, family):
    model = build(method, family)
    scramble(model)
    ids, mask, _ = batch(family)
    with torch.no_grad():
        mixed = model(ids, mask, task_ids=TASK_IDS).logits
        for i in range(len(ids)):
            alone = model(ids[i : i + 1], mask[i : i + 1], task_ids=TASK_IDS[i : i + 1]).logits
            torch.testing.assert_close(mixed[i : i + 1], alone, atol=1e-5, rtol=1e-5)
        if method != "hyperdecoder":  # the task conditioning changes the outputs
            other = model(ids, mask, task_ids=(TASK_IDS + 1) % len(TASKS)).logits
            valid = mixed > -1e30
            assert not torch.allclose(mixed[valid], other[valid], atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", ["pha", "hyperformer", "hyperdecoder", "adapter_per_task"])
def test_save_and_load_give_identical_outputs(method, family, tmp_path):
    model = build(method, family)
    scramble(model)
    if method == "pha":  # the saved task list includes an added task
        ids, mask, _ = batch(family, seed=5)
        model.add_task("new", dict(input_ids=ids, attention_mask=mask), init="mean",
                       num_labels=4 if family == "bert" else None)  # fmt: skip
    model.save_pretrained(tmp_path)
    loaded = pha.PHAModel.from_pretrained(tiny(family, seed=0), tmp_path)
    assert type(loaded) is type(model) and loaded.tasks == model.tasks
    ids, mask, _ = batch(family)
    task_ids = torch.arange(len(ids)) % len(model.tasks)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(ids, mask, task_ids=task_ids).logits,
            model(ids, mask, task_ids=task_ids).logits,
            rtol=0,
            atol=0,
        )


def test_from_pretrained_rejects_mismatched_weights(tmp_path):
    model = build("pha", "bert")
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="do not match"):
        other = transformers.BertModel(
            transformers.BertConfig(**{**tiny("bert").config.to_dict(), "num_hidden_layers": 6})
        )
        pha.PHAModel.from_pretrained(other, tmp_path)


def separable_examples(k: int, n: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    """Task k's inputs draw from its own 4 tokens."""
    g = torch.Generator().manual_seed(1000 * seed + k)
    tokens = torch.arange(3 + 10 * k, 7 + 10 * k)
    ids = tokens[torch.randint(0, len(tokens), (n, 6), generator=g)]
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids))


@pytest.mark.parametrize("family", FAMILIES)
def test_retrieval_finds_the_right_prototype_on_separable_data(family):
    """Trained with L_ins + L_pro alone, the retriever and prototypes must send held-out
    instances of each task to its prototype, and forward without task ids must use it."""
    model = build("pha", family, ins_weight=1.0, pro_weight=1.0)
    train = [separable_examples(k) for k in range(len(TASKS))]
    ids = torch.cat([t["input_ids"] for t in train])
    mask = torch.ones_like(ids)
    task_ids = torch.arange(len(TASKS)).repeat_interleave(6)
    params = [
        p for n, p in model.named_parameters() if n.startswith(("retriever", "prototypes", "lower"))
    ]
    opt = torch.optim.Adam(params, lr=1e-2)
    for _ in range(25):
        out = model(ids, mask, labels=_labels_for(family, ids), task_ids=task_ids)
        opt.zero_grad()
        sum(out.aux_losses.values()).backward()
        opt.step()
    for k in range(len(TASKS)):
        test = separable_examples(k, seed=1)
        retrieved, scores = model.retrieve(**test)
        assert scores.shape == (6, len(TASKS))
        assert (retrieved == k).all(), (k, retrieved)
        with torch.no_grad():
            assert (model(**test).task_ids == k).all()


def _labels_for(family, ids):
    if family == "bert":
        return torch.zeros(len(ids), dtype=torch.long)
    return ids.clone()


def test_add_task_mean_points_the_new_prototype_at_the_examples():
    model = build("pha", "gpt2")
    ex = separable_examples(0)
    z = model.embed(**ex)
    new = model.add_task("few", ex, init="mean")
    p = model.prototypes.weight
    direction = torch.nn.functional.normalize(z, dim=-1).mean(0)
    torch.testing.assert_close(
        torch.nn.functional.normalize(p[new], dim=0),
        torch.nn.functional.normalize(direction, dim=0),
    )
    torch.testing.assert_close(p[new].norm(), p[:new].norm(dim=-1).mean())
    assert model.retrieve(**ex)[1].shape == (6, len(TASKS) + 1)


def test_add_task_nearest_copies_the_nearest_prototype():
    model = build("pha", "t5")
    ids, mask, _ = batch("t5")
    z = model.embed(ids, mask)
    nearest = model.prototypes.nearest(
        torch.nn.functional.normalize(z, dim=-1).mean(0, keepdim=True)
    )[0]
    new = model.add_task("few", dict(input_ids=ids, attention_mask=mask), init="nearest")
    assert new == len(TASKS) and model.tasks[-1] == "few"
    torch.testing.assert_close(model.prototypes.weight[new], model.prototypes.weight[nearest[0]])


@pytest.mark.parametrize("family", FAMILIES)
def test_forward_without_task_ids_uses_the_nearest_prototype(family):
    model = build("pha", family)
    scramble(model)
    ids, mask, _ = batch(family)
    with torch.no_grad():
        retrieved, _ = model.retrieve(ids, mask)
        out = model(ids, mask)
        torch.testing.assert_close(out.task_ids, retrieved)
        torch.testing.assert_close(out.logits, model(ids, mask, task_ids=retrieved).logits)


def test_decoder_only_retriever_pools_the_prompt_tokens():
    model = build("pha", "llama")
    ids, mask, labels = batch("llama")
    z_prompt = model(ids, mask, labels=labels, task_ids=TASK_IDS).z
    half = ids.shape[1] // 2
    z_cut = model.embed(ids[:, :half], mask[:, :half])  # causal: the prompt alone
    torch.testing.assert_close(z_prompt, z_cut, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_a_dozen_steps_lower_the_loss(method):
    """Toy multi-task problem: each task labels an input by a different token's presence."""
    model = build(method, "bert")
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 64, (24, 8), generator=g)
    task_ids = torch.arange(24) % 3
    labels = torch.stack(
        [(ids[i] == 3 + 5 * k).any() for i, k in enumerate(task_ids.tolist())]
    ).long()
    mask = torch.ones_like(ids)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(12):
        loss = model(ids, mask, labels=labels, task_ids=task_ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses


@pytest.mark.parametrize("family", ["t5", "llama", "gpt2"])
def test_a_dozen_steps_lower_the_pha_loss_on_text_to_text(family):
    model = build("pha", family)
    ids, mask, labels = batch(family)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(12):
        loss = model(ids, mask, labels=labels, task_ids=TASK_IDS).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


def test_methods_registry():
    assert {"pha", "hyperformer", "hyperdecoder", "adapter", "full"} <= set(pha.METHODS)
    assert pha.METHODS["pha"] is pha.PHAConfig
    assert pha.METHODS["full"] is pha.FullFinetuneConfig


def test_errors():
    model = build("pha", "bert")
    ids, mask, labels = batch("bert")
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        model(ids, mask, task_ids=["nope"] * 6)
    with pytest.raises(ValueError, match=r"unknown task ids \[7\]"):
        model(ids, mask, task_ids=torch.tensor([0, 1, 2, 7, 0, 0]))
    with pytest.raises(ValueError, match="one id per instance"):
        model(ids, mask, task_ids=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"labels of task 'sst' must lie in \[0, 2\)"):
        model(ids, mask, labels=torch.full((6,), 2), task_ids=torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError, match="generate needs a T5 or decoder-only"):
        model.generate(ids, mask)
    with pytest.raises(ValueError, match="needs task_ids"):
        build("hyperformer", "bert")(ids, mask)
    with pytest.raises(ValueError, match="encoder backbones need num_labels"):
        pha.get_model(tiny("bert"), pha.PHAConfig(tasks=["a"]))
    with pytest.raises(ValueError, match="num_labels=None"):
        pha.get_model(tiny("t5"), pha.PHAConfig(tasks=["a"], num_labels=[2]))
    with pytest.raises(ValueError, match="split_layer must be None for T5"):
        pha.get_model(tiny("t5"), pha.PHAConfig(tasks=["a"], split_layer=1))
    with pytest.raises(ValueError, match=r"split_layer must lie in \[1, 3\]"):
        pha.get_model(tiny("bert"), pha.PHAConfig(tasks=["a"], num_labels=[2], split_layer=4))
    with pytest.raises(ValueError, match="tasks must be a non-empty list"):
        pha.PHAConfig(tasks=[])
    with pytest.raises(ValueError, match="unique"):
        pha.PHAConfig(tasks=["a", "a"])
    with pytest.raises(TypeError, match="config must be one of"):
        pha.get_model(tiny("bert"), object())
    with pytest.raises(ValueError, match="unsupported backbone Linear.*pha supports"):
        pha.get_model(torch.nn.Linear(2, 2), pha.AdapterConfig(tasks=["a"]))
    with pytest.raises(RuntimeError, match="call the PHAModel"):
        model.base_model(ids, mask)  # the generated adapters need the wrapper's context


def test_split_layer_is_configurable():
    model = build("pha", "bert", split_layer=1)
    assert len(model.lower_adapters) == 1
    assert model.hypernet.num_sites == 3


@pytest.mark.parametrize("family", ["t5", "bert", "llama"])
def test_gradient_checkpointing_gives_the_same_gradients(family):
    grads = []
    for checkpointing in (False, True):
        model = build("pha", family)
        scramble(model)
        model.train()
        if checkpointing:
            base = model.base_model
            (
                getattr(base, "activation_checkpointing_enable", None)
                or base.gradient_checkpointing_enable
            )()
        ids, mask, labels = batch(family)
        model(ids, mask, labels=labels, task_ids=TASK_IDS).loss.backward()
        grads.append({n: p.grad for n, p in trainable(model).items()})
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, msg=name)


def test_pha_hypernetwork_per_layer_option():
    from method_utils import OUT, D, E, H, R, heads_params

    shared = build("pha", "bert")
    per_layer = build("pha", "bert", hypernet_per_layer=True)
    count = lambda m: sum(p.numel() for n, p in m.named_parameters() if n.startswith("hypernet."))  # noqa: E731
    trunk = (E * H + H) + (H * OUT + OUT) + 2 * OUT  # no layer embedding in the input
    assert count(per_layer) == 2 * (trunk + heads_params(OUT, [D * R, R, R * D, D]))
    assert count(shared) != count(per_layer)
    scramble(per_layer)
    ids, mask, _ = batch("bert")
    with torch.no_grad():
        mixed = per_layer(ids, mask, task_ids=TASK_IDS).logits
        alone = per_layer(ids[1:2], mask[1:2], task_ids=TASK_IDS[1:2]).logits
    torch.testing.assert_close(mixed[1:2], alone, atol=1e-5, rtol=1e-5)


def test_add_task_on_the_other_methods():
    ids, mask, _ = batch("bert")
    examples = dict(input_ids=ids, attention_mask=mask)
    model = build("hyperformer", "bert")
    with pytest.raises(ValueError, match="only with init='mean'"):
        model.add_task("new", examples, init="nearest", num_labels=2)
    assert model.tasks == TASKS and len(model.heads) == len(TASKS)  # nothing changed
    new = model.add_task("new", examples, init="mean", num_labels=4)
    emb = model.task_embeddings.weight
    torch.testing.assert_close(emb[new], emb[:new].mean(0))
    out = model(ids, mask, task_ids=torch.full((6,), new))
    assert out.logits.shape == (6, 4)
    with pytest.raises(ValueError, match="AdapterModel does not support add_task"):
        build("adapter_per_task", "bert").add_task("new", examples, num_labels=2)
    shared = build("adapter", "t5")
    assert shared.add_task("new", examples) == len(TASKS)
    with pytest.raises(ValueError, match="already exists"):
        shared.add_task("new", examples)
    with pytest.raises(ValueError, match="needs num_labels"):
        build("pha", "bert").add_task("x", examples)


def _encoder_states(run, encoder: torch.nn.Module) -> torch.Tensor:
    """The encoder stack's last hidden states during run()."""
    seen = []
    handle = encoder.register_forward_hook(lambda m, a, out: seen.append(out.last_hidden_state))
    with torch.no_grad():
        run()
    handle.remove()
    return seen[0]


@pytest.mark.parametrize("family", ["bert", "t5"])
def test_hyperformer_norm_init_zero_starts_as_the_backbone(family):
    """norm_init="zero": every generated LayerNorm starts at gain 0 and bias 0, so each
    adapter block adds nothing and the encoder computes what the frozen backbone does;
    the paper's init ("normal") does not (on post-LN BERT it moves the output a lot)."""
    ids, mask, labels = batch(family)
    task_ids = torch.arange(ids.shape[0]) % len(TASKS)
    backbone = tiny(family)
    plain_kwargs = {} if family == "bert" else {"labels": labels}
    plain = _encoder_states(
        lambda: backbone(input_ids=ids, attention_mask=mask, **plain_kwargs), backbone.encoder
    )
    for norm_init in ("zero", "normal"):
        model = build("hyperformer", family, norm_init=norm_init).eval()
        states = _encoder_states(
            lambda m=model: m(ids, mask, labels=labels, task_ids=task_ids), model.base_model.encoder
        )
        if norm_init == "zero":
            torch.testing.assert_close(states, plain)
        else:
            assert not torch.allclose(states, plain, atol=1e-3)
    with pytest.raises(ValueError, match="norm_init"):
        build("hyperformer", family, norm_init="ones")


@pytest.mark.parametrize("method", ["pha", "hyperdecoder"])
@pytest.mark.parametrize("bf16", [False, True])
def test_per_site_views_give_the_stacked_weights_gradients(method, bf16, monkeypatch):
    """The generated adapters read their site's weights from per_site's views: the loss and
    every gradient are bit for bit those of indexing the stacked tensors (fp32 and under
    bf16 autocast)."""
    import pha.methods.generated as generated
    from pha.methods.hyperdecoder import model as hyperdecoder_model
    from pha.methods.pha import model as pha_model

    def run():
        torch.manual_seed(0)
        model = build(method, "bert")
        scramble(model)
        ids, mask, labels = batch("bert")
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            loss = model(ids, mask, labels=labels, task_ids=TASK_IDS).loss
        loss.backward()
        return loss.detach(), {n: p.grad for n, p in trainable(model).items()}

    views_loss, views = run()
    assert views["hypernet.generator.heads.w_down.weight"].abs().sum() > 0
    for module in (pha_model, hyperdecoder_model):
        monkeypatch.setattr(module, "per_site", lambda weights: weights)  # stacked tensors
    stacked_loss, stacked = run()
    assert torch.equal(views_loss, stacked_loss)
    assert views.keys() == stacked.keys()
    for name, grad in stacked.items():
        assert (grad is None) == (views[name] is None), name
        assert grad is None or torch.equal(views[name], grad), name
    assert generated.per_site({"w": torch.zeros(3, 2)})["w"][2].shape == (2,)

"""The PEFT habits of pha.PHAModel: ModelOutput outputs, disable_adapter / unload /
get_base_model against the untouched backbone, one wrapper per backbone, from_pretrained
frozen in eval mode, MethodConfig save/load and AutoPHAModel round trips.

Tiny random backbones (tests/tiny_backbones.py); the offline-alias test loads the real
MiniLM through pha.backbones.load_backbone."""

from __future__ import annotations

import pytest
import torch
from method_utils import make_config, one_thread, scramble  # noqa: F401  (fixture)
from tiny_backbones import FAMILIES, batch, tiny
from train_utils import pha_cache, tiny_tokenizer  # noqa: F401  (fixture)
from transformers import Trainer, TrainingArguments
from transformers.utils import ModelOutput, find_labels

import pha
from pha.checkpoint import CheckpointError

ADAPTER_METHODS = ("pha", "hyperformer", "hyperpelt", "hyperdecoder", "adapter", "adapter_per_task")
ALL_METHODS = (*ADAPTER_METHODS, "full")


def config(method: str, family: str) -> pha.MethodConfig:
    if method == "hyperpelt":
        return pha.HyperPELTConfig(
            tasks=["sst", "nli", "para"], num_labels=[2, 3, 2] if family == "bert" else None,
            prefix_length=3, adapter_dim=8, task_embed_dim=8, site_embed_dim=8,
            hypernet_hidden_dim=16, hypernet_out_dim=8, hypernet_init="normal",
        )  # fmt: skip
    return make_config(method, family)


def wrapped(method: str, family: str) -> pha.PHAModel:
    """A model whose every method weight, and every backbone weight it trains, is far from
    its initial value: the adapters change the outputs."""
    model = pha.get_model(tiny(family), config(method, family))
    scramble(model)
    with torch.no_grad():
        for p in model.trainable_backbone_parameters():
            p.add_(0.5)
    return model


def inputs(family: str) -> dict[str, torch.Tensor]:
    ids, mask, labels = batch(family)
    if family in ("llama", "gpt2"):  # no left padding: the wrapper derives positions from it
        mask = torch.ones_like(mask)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def plain_output(backbone: torch.nn.Module, family: str, x: dict) -> torch.Tensor:
    """The HF model's own output: last hidden state (BERT) or LM logits."""
    if family == "bert":
        return backbone(x["input_ids"], x["attention_mask"]).last_hidden_state
    return backbone(**x).logits


def hooks(module: torch.nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._forward_hooks_with_kwargs)
        for m in module.modules()
    )


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", ADAPTER_METHODS)
def test_disable_adapter_and_unload_give_the_untouched_backbone(method, family):
    untouched = tiny(family)
    model = wrapped(method, family)
    x = inputs(family)
    task_ids = torch.tensor([0, 1, 2, 0, 1, 2])
    with torch.no_grad():
        expected = plain_output(untouched, family, x)
        adapted = model(**x, task_ids=task_ids)
        with model.disable_adapter():
            direct = plain_output(model.get_base_model(), family, x)
            through = model(**x, task_ids=task_ids)
        after = model(**x, task_ids=task_ids)
    torch.testing.assert_close(direct, expected, rtol=0, atol=0)
    torch.testing.assert_close(after.logits, adapted.logits, rtol=0, atol=0)  # back on
    if family == "bert":  # the heads on the plain backbone's pooled features
        pooled = pha.modules.masked_mean(expected, x["attention_mask"])
        head = model.heads[0](pooled[:1])  # fp32 tolerance: another GEMM shape than the model's
        torch.testing.assert_close(through.logits[:1, :2], head)
        assert not torch.allclose(through.logits, adapted.logits)
    else:
        torch.testing.assert_close(through.logits, expected, rtol=0, atol=0)
        assert (adapted.logits - expected).abs().max() > 1e-3
    assert through.aux_losses == {}

    wrapped_backbone = model.base_model
    backbone = model.unload()
    assert backbone is wrapped_backbone and hooks(backbone) == 0
    assert not any(hasattr(m, "_pha_prefix") for m in backbone.modules())
    assert all(p.requires_grad for p in backbone.parameters())  # as tiny() made them
    assert backbone.config._attn_implementation == untouched.config._attn_implementation
    with torch.no_grad():
        torch.testing.assert_close(plain_output(backbone, family, x), expected, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="unloaded"):
        model(**x, task_ids=task_ids)
    pha.get_model(backbone, config(method, family))  # the backbone can be wrapped again


def test_full_finetuning_has_no_adapter_to_disable():
    model = wrapped("full", "t5")
    with pytest.raises(ValueError, match="no adapter to disable"):
        with model.disable_adapter():
            pass
    backbone = model.unload()
    assert hooks(backbone) == 0


def test_a_backbone_takes_one_wrapper_at_a_time():
    base = tiny("bert")
    model = pha.get_model(base, make_config("pha", "bert"))
    with pytest.raises(ValueError, match="already wrapped by a PHAModel"):
        pha.get_model(base, make_config("adapter", "bert"))
    x = inputs("bert")
    with torch.no_grad():  # the refused second wrapper left the first one working
        model(**x, task_ids=torch.zeros(6, dtype=torch.long))
    model.unload()
    pha.get_model(base, make_config("adapter", "bert"))


def test_a_failed_build_leaves_no_hook():
    base = tiny("llama")
    base.config._attn_implementation_internal = "flex_attention"  # prefixes refuse it
    with pytest.raises(ValueError, match="attn_implementation"):
        pha.get_model(base, config("hyperpelt", "llama"))  # after its adapters were attached
    assert hooks(base) == 0
    pha.get_model(base, make_config("adapter", "llama"))


@pytest.mark.parametrize("family", ["bert", "t5"])
def test_outputs_are_model_outputs_the_trainer_can_read(family):
    model = wrapped("pha", family)
    x = inputs(family)
    out = model(**x, task_ids=torch.tensor([0, 1, 2, 0, 1, 2]))
    assert isinstance(out, ModelOutput)
    assert out["loss"] is out.loss and out[0] is out.loss and out[1] is out.logits
    assert set(out.aux_losses) == {"ins", "pro"}
    assert model.config is model.base_model.config and model.method_config.method == "pha"
    assert model.accepts_loss_kwargs is False  # the Trainer passes no num_items_in_batch


@pytest.mark.parametrize("method", ALL_METHODS)
def test_the_trainer_finds_labels_in_every_methods_forward(method):
    """The HF Trainer takes its label_names from forward's signature (find_labels);
    HyperPELT's `forward(*args, visual_features, **kwargs)` used to hide them."""
    model_class = type(pha.get_model(tiny("bert"), config(method, "bert")))
    assert find_labels(model_class) == ["labels"]


def test_trainer_prediction_step_returns_the_labels(tmp_path):
    model = wrapped("hyperpelt", "bert")
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    trainer = Trainer(model=model, args=args)
    assert trainer.label_names == ["labels"]
    x = {**inputs("bert"), "task_ids": torch.tensor([0, 1, 2, 0, 1, 2])}
    loss, outputs, labels = trainer.prediction_step(model, x, prediction_loss_only=False)
    assert loss is not None and outputs[0].shape[0] == 6  # the logits lead the other outputs
    assert torch.equal(labels, x["labels"])  # None while find_labels found no labels


def test_trainable_parameter_counts():
    model = wrapped("adapter", "bert")
    trainable, total = model.get_nb_trainable_parameters()
    assert trainable == sum(p.numel() for p in model.parameters() if p.requires_grad) > 0
    assert total == sum(p.numel() for p in model.parameters()) > trainable


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", ALL_METHODS)
def test_auto_model_round_trip(method, family, tmp_path):
    """The saved config names the backbone directory; AutoPHAModel loads backbone and
    adapter from it in one call, frozen and in eval mode."""
    tiny(family).save_pretrained(tmp_path / "backbone")
    tiny_tokenizer().save_pretrained(tmp_path / "backbone")  # load_backbone loads one too
    base, _, _ = pha.backbones.load_backbone(str(tmp_path / "backbone"))
    model = pha.get_model(base, config(method, family))
    assert model.method_config.base_model_name_or_path == str(tmp_path / "backbone")
    scramble(model)
    model.save_pretrained(tmp_path / "adapter")

    loaded = pha.AutoPHAModel.from_pretrained(tmp_path / "adapter")
    assert type(loaded) is type(model) and loaded.method_config == model.method_config
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    x = inputs(family)
    task_ids = torch.tensor([0, 1, 2, 2, 1, 0])
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(**x, task_ids=task_ids).logits, model(**x, task_ids=task_ids).logits
        )

    trainable = pha.AutoPHAModel.from_pretrained(tmp_path / "adapter", is_trainable=True)
    assert set(n for n, p in trainable.named_parameters() if p.requires_grad) == set(
        n for n, p in model.named_parameters() if p.requires_grad
    )


def test_from_pretrained_defaults_to_frozen_eval(tmp_path):
    model = wrapped("hyperformer", "bert")
    model.save_pretrained(tmp_path)
    loaded = pha.PHAModel.from_pretrained(tiny("bert"), tmp_path)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    assert set(loaded.trainable_state_dict()) == set(model.trainable_state_dict())
    with pytest.raises(ValueError, match="holds a HyperFormerConfig"):
        pha.PrototypeHyperAdapterModel.from_pretrained(tiny("bert"), tmp_path)


def test_method_config_save_and_load(tmp_path):
    cfg = pha.PHAConfig(tasks=["a", "b"], num_labels=[2, 5], adapter_dim=7)
    cfg.save_pretrained(tmp_path)
    assert pha.MethodConfig.from_pretrained(tmp_path) == cfg
    assert pha.PHAConfig.from_pretrained(tmp_path) == cfg
    with pytest.raises(ValueError, match="not a AdapterConfig"):
        pha.AdapterConfig.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="pha_config.json"):
        pha.MethodConfig.from_pretrained(tmp_path / "nowhere")


def test_auto_model_needs_a_recorded_backbone(tmp_path):
    model = wrapped("adapter", "t5")  # built in memory: no name to record
    assert model.method_config.base_model_name_or_path is None
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="records no base_model_name_or_path"):
        pha.AutoPHAModel.from_pretrained(tmp_path)


def test_re_saving_the_config_of_a_saved_adapter_keeps_it_verifiable(tmp_path):
    """Re-saving a saved adapter's config (e.g. to record where its backbone now is)
    updates the config's checksum with it; it used to make the adapter unloadable. The
    weights stay guarded by theirs."""
    model = wrapped("adapter", "t5")
    model.save_pretrained(tmp_path)
    cfg = pha.MethodConfig.from_pretrained(tmp_path)
    cfg.base_model_name_or_path = str(tmp_path / "backbone")
    cfg.save_pretrained(tmp_path)
    assert pha.PHAModel.from_pretrained(tiny("t5"), tmp_path).method_config == cfg
    weights = tmp_path / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="adapter_model.safetensors does not match"):
        pha.PHAModel.from_pretrained(tiny("t5"), tmp_path)


def test_offline_alias_is_recorded_and_reloaded(pha_cache, tmp_path):  # noqa: F811
    base, tokenizer, _ = pha.backbones.load_backbone("minilm")
    model = pha.get_model(base, pha.AdapterConfig(tasks=["a"], num_labels=[2], adapter_dim=4))
    assert model.method_config.base_model_name_or_path == "minilm"
    scramble(model)
    model.save_pretrained(tmp_path)
    loaded = pha.AutoPHAModel.from_pretrained(tmp_path)
    enc = tokenizer(["a short sentence", "another one"], padding=True, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**enc).logits, model(**enc).logits)

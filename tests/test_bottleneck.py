"""Our bottleneck adapters (worker.bottleneck), in-process on tiny Llama models: no training run.

What AdapterHub defines and we promise: an adapter is down (h→m), non-linearity,
up (m→h) and a residual, m = h // reduction_factor, so 2·h·m + h + m parameters;
Pfeiffer puts one after each decoder layer's FFN, Houlsby one after attention and
one after the FFN; a new adapter is the identity. And the folder format: our
adapter_config.json + adapter_model.safetensors, read back by the public loader.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM

from app.methods import parse_options
from worker.bottleneck import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    BottleneckAdapter,
    add_bottleneck_adapters,
    adapter_parameter_count,
    find_adapters,
    from_pretrained,
    is_bottleneck_folder,
    load_bottleneck_adapter,
    save_bottleneck_adapter,
)

pytestmark = pytest.mark.unit


HIDDEN, LAYERS = 64, 3
INPUT_IDS = torch.tensor([[1, 5, 9, 2, 7, 3, 8]])


def tiny_llama(hidden: int = HIDDEN, layers: int = LAYERS, seed: int = 0) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=50, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=INPUT_IDS).logits


def randomize_adapters(model: torch.nn.Module, seed: int = 1) -> None:
    """Give every adapter weight (the zero up-projections too) a random value, as training would."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in find_adapters(model).parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.1)


@pytest.mark.parametrize(("hidden", "reduction_factor", "bottleneck"), [(64, 16, 4), (256, 16, 16), (100, 3, 33)])
def test_one_adapter_has_2hm_plus_h_plus_m_parameters(hidden: int, reduction_factor: int, bottleneck: int) -> None:
    adapter = BottleneckAdapter(hidden, hidden // reduction_factor)
    assert hidden // reduction_factor == bottleneck
    expected = 2 * hidden * bottleneck + hidden + bottleneck
    assert sum(p.numel() for p in adapter.parameters()) == expected == adapter_parameter_count(hidden, bottleneck)


@pytest.mark.parametrize(("config", "sites"), [("houlsby", {"attn", "ffn"}), ("pfeiffer", {"ffn"})])
def test_houlsby_puts_two_adapters_per_layer_and_pfeiffer_one(config: str, sites: set[str]) -> None:
    model = tiny_llama()
    adapters = add_bottleneck_adapters(model, config=config, reduction_factor=16)
    assert len(adapters.layers) == LAYERS
    assert all(set(per_layer.keys()) == sites for per_layer in adapters.layers)
    m = HIDDEN // 16
    count = sum(p.numel() for p in adapters.parameters())
    assert count == LAYERS * len(sites) * adapter_parameter_count(HIDDEN, m)
    # One forward hook per adapter, on the block it follows.
    for layer in model.model.layers:
        assert len(layer.self_attn._forward_hooks) == ("attn" in sites)
        assert len(layer.mlp._forward_hooks) == 1


@pytest.mark.parametrize("non_linearity", ["relu", "gelu", "silu", "tanh"])
@pytest.mark.parametrize("config", ["houlsby", "pfeiffer"])
def test_new_adapters_are_the_identity(config: str, non_linearity: str) -> None:
    base = logits(tiny_llama())
    model = tiny_llama()
    add_bottleneck_adapters(model, config=config, reduction_factor=8, non_linearity=non_linearity)
    assert torch.equal(logits(model), base)  # bit for bit: the up-projection is zero
    adapters = find_adapters(model)
    assert all(torch.all(a.up.weight == 0) and torch.all(a.up.bias == 0) for layer in adapters.layers
               for a in layer.values())
    assert all(a.down.weight.abs().sum() > 0 for layer in adapters.layers for a in layer.values())


@pytest.mark.parametrize("site", ["attn", "ffn"])
def test_each_adapter_is_on_the_forward_path(site: str) -> None:
    """Identity at init proves nothing unless the hooks run: move one adapter, the logits move."""
    model = tiny_llama()
    base = logits(model)
    adapters = add_bottleneck_adapters(model, config="houlsby", reduction_factor=8)
    with torch.no_grad():
        adapters.layers[1][site].up.bias.fill_(0.5)
    assert (logits(model) - base).abs().max() > 1e-3


def _adapter_grads(checkpointing: bool) -> dict[str, torch.Tensor]:
    from worker.methods import adapters as method

    model = tiny_llama().train()
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    torch.manual_seed(3)  # the down-projections' init
    model = method.build(model, parse_options("adapters", {"config": "houlsby", "reduction_factor": 8,
                                                           "non_linearity": "relu"}))
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith("bottleneck_adapters.") for name in trainable)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == (
        LAYERS * 2 * adapter_parameter_count(HIDDEN, HIDDEN // 8)
    )
    model(input_ids=INPUT_IDS, labels=INPUT_IDS).loss.backward()
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("bottleneck_adapters."))
    return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


def test_adapters_train_behind_a_frozen_base_with_and_without_gradient_checkpointing() -> None:
    plain = _adapter_grads(checkpointing=False)
    for name, grad in plain.items():
        # The up-projection starts at zero, so on the first step only it gets a gradient (as in AdapterHub).
        assert grad is not None
        assert bool(grad.abs().sum() > 0) is (".up." in name), name
    checkpointed = _adapter_grads(checkpointing=True)
    assert all(torch.allclose(plain[name], checkpointed[name], atol=1e-7) for name in plain)


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    base_dir = tmp_path / "base"
    tiny_llama().save_pretrained(base_dir)
    model = tiny_llama()
    add_bottleneck_adapters(model, config="houlsby", reduction_factor=8, non_linearity="gelu")
    randomize_adapters(model)
    trained = logits(model)
    assert (trained - logits(tiny_llama())).abs().max() > 1e-3

    folder = tmp_path / "adapter"
    save_bottleneck_adapter(model, folder, base_model_name_or_path=str(base_dir))
    config = json.loads((folder / CONFIG_NAME).read_text())
    assert config == {
        "adapter_type": "bottleneck", "config": "houlsby", "reduction_factor": 8, "non_linearity": "gelu",
        "hidden_size": HIDDEN, "bottleneck_size": HIDDEN // 8, "num_layers": LAYERS,
        "base_model_name_or_path": str(base_dir), "tunedeck_version": config["tunedeck_version"],
    }
    assert config["tunedeck_version"] and "peft_type" not in config
    assert is_bottleneck_folder(folder)
    weights = load_file(folder / WEIGHTS_NAME)
    assert sorted(weights)[:4] == [
        "layers.0.attn.down.bias", "layers.0.attn.down.weight", "layers.0.attn.up.bias", "layers.0.attn.up.weight"
    ]
    assert sum(t.numel() for t in weights.values()) == LAYERS * 2 * adapter_parameter_count(HIDDEN, HIDDEN // 8)

    # The public loader, onto a model the caller loaded ...
    loaded = load_bottleneck_adapter(tiny_llama(), folder)
    assert torch.equal(logits(loaded), trained)
    assert not any(p.requires_grad for p in find_adapters(loaded).parameters())  # frozen, like peft's default
    assert all(p.requires_grad for p in find_adapters(load_bottleneck_adapter(tiny_llama(), folder, trainable=True))
               .parameters())
    # ... and from the folder alone (base from adapter_config.json), or with an explicit base.
    for model_from_folder in (from_pretrained(folder), from_pretrained(folder, base=base_dir)):
        assert not model_from_folder.training
        assert torch.equal(logits(model_from_folder), trained)


def test_loader_refuses_another_base_and_incomplete_weights(tmp_path: Path) -> None:
    model = tiny_llama()
    add_bottleneck_adapters(model, config="pfeiffer", reduction_factor=8)
    folder = tmp_path / "adapter"
    save_bottleneck_adapter(model, folder, base_model_name_or_path="unused")
    with pytest.raises(ValueError, match="hidden size 64 and 3 layers; this model has hidden size 32 and 3 layers"):
        load_bottleneck_adapter(tiny_llama(hidden=32), folder)
    with pytest.raises(ValueError, match="already has bottleneck adapters"):
        load_bottleneck_adapter(model, folder)
    weights = load_file(folder / WEIGHTS_NAME)
    del weights["layers.2.ffn.up.weight"]
    save_file(weights, folder / WEIGHTS_NAME)
    with pytest.raises(RuntimeError, match="layers.2.ffn.up.weight"):
        load_bottleneck_adapter(tiny_llama(), folder)


def test_a_peft_folder_is_not_a_bottleneck_folder(tmp_path: Path) -> None:
    (tmp_path / CONFIG_NAME).write_text(json.dumps({"peft_type": "LORA", "adapter_type": "bottleneck"}))
    assert not is_bottleneck_folder(tmp_path)
    with pytest.raises(ValueError, match="not a bottleneck adapter config"):
        from_pretrained(tmp_path)


def test_a_reduction_factor_above_the_hidden_size_is_refused() -> None:
    with pytest.raises(ValueError, match="reduction_factor=128 leaves no bottleneck for hidden size 64"):
        add_bottleneck_adapters(tiny_llama(), reduction_factor=128)

"""In-process checks of what a method builds, on a tiny model (no training)."""
from __future__ import annotations

from typing import Any

import pytest
import torch

from app.methods import parse_options
from tests.helpers.method_runs import GALORE_OPTIONS, GALORE_RANK, QLORA_OPTIONS

pytestmark = pytest.mark.unit


def _tiny_llama(tie: bool) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=64, tie_word_embeddings=tie,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


def _trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize(
    ("lm_head", "embeddings", "shared_trains"),
    [(False, False, False), (True, False, True), (False, True, True), (True, True, True)],
)
def test_freeze_with_tied_embeddings_trains_the_shared_tensor_if_either_is_asked(
    lm_head: bool, embeddings: bool, shared_trains: bool
) -> None:
    from worker.methods import freeze

    model = freeze.build(
        _tiny_llama(tie=True),
        parse_options("freeze", {"trainable_layers": 1, "train_lm_head": lm_head, "train_embeddings": embeddings,
                                 "optimizer": "adamw"}),
    )
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert model.lm_head.weight.requires_grad is shared_trains
    last_layer_and_norm = sum(p.numel() for p in model.model.layers[-1].parameters()) + model.model.norm.weight.numel()
    shared = model.lm_head.weight.numel() if shared_trains else 0
    assert _trainable(model) == last_layer_and_norm + shared  # the shared tensor counts once
    assert not any(p.requires_grad for p in model.model.layers[0].parameters())


def test_freeze_refuses_more_layers_than_the_model_has() -> None:
    from worker.methods import freeze

    options = {"trainable_layers": 4, "train_lm_head": True, "train_embeddings": False, "optimizer": "adamw"}
    with pytest.raises(ValueError, match="only 3 decoder layers"):
        freeze.build(_tiny_llama(tie=False), parse_options("freeze", options))


def test_prefix_tuning_refuses_gradient_checkpointing() -> None:
    from worker.methods import prefix

    model = _tiny_llama(tie=False)
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    with pytest.raises(ValueError, match="prefix tuning does not work with gradient checkpointing"):
        prefix.build(model, parse_options("prefix", {"num_virtual_tokens": 4}))


def test_prompt_tuning_prepends_positions_and_prefix_tuning_does_not() -> None:
    """Why the loop drops the first logits for prompt tuning only (see summed_loss)."""
    from worker.methods import prefix, prompt

    input_ids = torch.tensor([[1, 2, 3, 4, 5]])
    prompt_model = prompt.build(_tiny_llama(tie=False), parse_options("prompt", {"num_virtual_tokens": 4}))
    prefix_model = prefix.build(_tiny_llama(tie=False), parse_options("prefix", {"num_virtual_tokens": 4}))
    with torch.no_grad():
        assert prompt_model(input_ids=input_ids).logits.shape[1] == 5 + 4
        assert prefix_model(input_ids=input_ids).logits.shape[1] == 5


def test_qlora_refuses_a_full_precision_base() -> None:
    from worker.methods import qlora

    with pytest.raises(ValueError, match="base loaded in 4 bits"):
        qlora.build(_tiny_llama(tie=False), parse_options("qlora", QLORA_OPTIONS))


def test_galore_groups_project_exactly_the_target_weights() -> None:
    from worker.methods import galore

    options = parse_options("galore", {**GALORE_OPTIONS, "target_modules": "minimal"})
    model = galore.build(_tiny_llama(tie=False), options)
    optimizer = galore.own_optimizer(model, options, 1e-3, 0.01)
    projected = [g for g in optimizer.param_groups if "rank" in g]
    assert len(projected) == 1
    group = projected[0]
    assert (group["rank"], group["update_proj_gap"], group["scale"], group["proj_type"]) == (
        GALORE_RANK, 200, 0.25, "std"
    )
    expected = {id(layer.self_attn.q_proj.weight) for layer in model.model.layers} | {
        id(layer.self_attn.v_proj.weight) for layer in model.model.layers
    }
    assert {id(p) for p in group["params"]} == expected
    # Every trainable parameter is in exactly one group; 1-D ones without weight decay.
    grouped = [p for g in optimizer.param_groups for p in g["params"]]
    assert len(grouped) == len({id(p) for p in grouped}) == len(list(model.parameters()))
    assert all(g["weight_decay"] == 0.0 for g in optimizer.param_groups if g["params"][0].dim() < 2)


def test_galore_refuses_targets_that_match_nothing() -> None:
    from worker.methods import galore

    with pytest.raises(ValueError, match=r"\['w_in'\] match no linear layer"):
        options = parse_options("galore", {**GALORE_OPTIONS, "target_modules": ["q_proj", "w_in"]})
        galore.build(_tiny_llama(tie=False), options)

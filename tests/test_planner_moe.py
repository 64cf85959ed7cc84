"""Mixture-of-experts models in the planner (issue 14, acceptance 4).

The instant closed form (`app/planner/moe.py`) is held to the traced step: the real transformers
5.23 Mixtral / Qwen3-MoE / gpt-oss code (grouped-matmul experts, top-k routers) run under fake
tensors on small configs of each style. Every expert's weights are resident, the activations and
FLOPs follow the k experts a token is routed to, and LoRA/GaLore see only the Linear modules
(the experts are 3-D parameters).
"""
from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")

from app.methods import METHODS, MethodError, check_against  # noqa: E402
from app.planner.architecture import Architecture, ArchitectureError  # noqa: E402
from app.planner.catalog import load_catalog  # noqa: E402
from app.planner.compute import flops_per_micro_batch  # noqa: E402
from app.planner.estimate import RunLength, instant_estimate  # noqa: E402
from app.planner.memory import estimate_memory  # noqa: E402
from app.planner.params import count_params  # noqa: E402
from app.planner.setup import TrainingSetup  # noqa: E402
from worker.trace import trace_step  # noqa: E402

pytestmark = pytest.mark.unit
warnings.filterwarnings("ignore", category=FutureWarning)

MIXTRAL = {"model_type": "mixtral", "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 8,
           "num_key_value_heads": 4, "intermediate_size": 512, "vocab_size": 1024, "num_local_experts": 8,
           "num_experts_per_tok": 2, "max_position_embeddings": 4096, "tie_word_embeddings": False}
QWEN3_MOE = {"model_type": "qwen3_moe", "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 8,
             "num_key_value_heads": 4, "head_dim": 32, "intermediate_size": 768, "moe_intermediate_size": 128,
             "vocab_size": 1024, "num_experts": 16, "num_experts_per_tok": 4, "norm_topk_prob": True,
             "max_position_embeddings": 4096, "tie_word_embeddings": False}
GPT_OSS = {"model_type": "gpt_oss", "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 8,
           "num_key_value_heads": 4, "head_dim": 32, "intermediate_size": 256, "vocab_size": 1024,
           "num_local_experts": 8, "num_experts_per_tok": 2, "max_position_embeddings": 4096,
           "tie_word_embeddings": False, "sliding_window": 128,
           "layer_types": ["sliding_attention", "full_attention"] * 2}
STYLES = {"mixtral": MIXTRAL, "qwen3_moe": QWEN3_MOE}
# Published totals (model cards): every expert counts, active or not.
MOE_SIZES = {"mixtral-8x7b": 46.7e9, "qwen3-30b-a3b": 30.5e9, "gpt-oss-20b": 20.9e9}


def _setup(method: str, **kwargs: object) -> TrainingSetup:
    return TrainingSetup.build(method, {}, seq_len=256, batch_size=2, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("style", sorted(STYLES))
@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("checkpointing", [False, True])
def test_moe_instant_peak_is_within_10_percent_of_the_traced_step(style: str, method: str,
                                                                  checkpointing: bool) -> None:
    arch = Architecture.from_config(STYLES[style])
    setup = _setup(method, gradient_checkpointing=checkpointing)
    traced = trace_step(arch, setup)
    instant = estimate_memory(arch, setup)
    assert abs(instant.peak - traced.peak_bytes) <= 0.10 * traced.peak_bytes, \
        f"instant {instant.peak / 2**20:.2f} MiB, traced {traced.peak_bytes / 2**20:.2f} MiB"
    assert instant.trainable_params == traced.trainable_params
    assert instant.total_params == traced.total_params


@pytest.mark.parametrize("style", sorted(STYLES))
@pytest.mark.parametrize("method", ["full", "lora", "prompt"])
def test_moe_instant_peak_holds_in_mixed_precision_with_fp32_experts(style: str, method: str) -> None:
    """Under autocast the experts' grouped matmuls run in the fp32 master weights' dtype, not bf16."""
    arch = Architecture.from_config(STYLES[style])
    setup = _setup(method, gradient_checkpointing=True, precision="mixed")
    traced = trace_step(arch, setup)
    assert abs(estimate_memory(arch, setup).peak - traced.peak_bytes) <= 0.10 * traced.peak_bytes


def test_a_gpt_oss_style_model_is_planned_within_10_percent_too() -> None:
    arch = Architecture.from_config(GPT_OSS)
    for method in ("full", "lora", "qlora"):
        setup = _setup(method, gradient_checkpointing=True)
        traced = trace_step(arch, setup)
        assert abs(estimate_memory(arch, setup).peak - traced.peak_bytes) <= 0.10 * traced.peak_bytes, method
        assert estimate_memory(arch, setup).total_params == traced.total_params


@pytest.mark.parametrize("style", sorted(STYLES))
def test_moe_flops_match_the_traced_grouped_matmuls(style: str) -> None:
    arch = Architecture.from_config(STYLES[style])
    for method in ("full", "lora", "freeze"):
        setup = _setup(method)
        traced = trace_step(arch, setup).flops_per_micro_batch
        assert abs(flops_per_micro_batch(arch, setup) - traced) <= 0.01 * traced, method


def test_more_experts_add_weights_but_not_activations_or_expert_flops() -> None:
    """Doubling E at the same k doubles the experts' resident bytes; a token still runs k experts."""
    small = Architecture.from_config(MIXTRAL)
    large = Architecture.from_config({**MIXTRAL, "num_local_experts": 16})
    setup = _setup("lora")
    a, b = estimate_memory(small, setup), estimate_memory(large, setup)
    experts = 4 * 8 * 3 * 512 * 256  # layers x experts x (gate, up, down) x f x h
    assert b.total_params - a.total_params == experts + 4 * 8 * 256  # and the router's 8 more rows
    assert b.saved_activations - a.saved_activations < 0.05 * a.saved_activations  # the router's softmax only
    router = 2 * (2 * 512 * 256 * 8) * 4  # the router's product and its input gradient: 2·tokens·h·ΔE each, 4 layers
    assert flops_per_micro_batch(large, setup) - flops_per_micro_batch(small, setup) == router


def test_moe_flops_follow_the_active_parameters_not_the_total() -> None:
    """Mixtral-8x7B has 46.7B weights but runs about 12.9B per token: full fine-tuning's FLOPs per
    token are ~6 x the active count (plus attention), far below 6 x the total."""
    arch = load_catalog().architecture("mixtral-8x7b")
    setup = TrainingSetup.build("full", {}, seq_len=512, batch_size=1)
    per_token = flops_per_micro_batch(arch, setup) / 512
    assert 6 * 12.9e9 * 0.95 < per_token < 6 * 12.9e9 * 1.15


@pytest.mark.parametrize("model_id", sorted(MOE_SIZES))
def test_a_catalog_moe_model_has_its_published_size_with_every_expert(model_id: str) -> None:
    arch = load_catalog().architecture(model_id)
    assert arch.moe is not None
    total = count_params(arch).total
    assert abs(total - MOE_SIZES[model_id]) / MOE_SIZES[model_id] < 0.01, f"{total / 1e9:.2f}B"


@pytest.mark.parametrize("method", ["lora", "galore"])
def test_all_linear_on_an_moe_model_means_its_attention_projections(method: str) -> None:
    arch = Architecture.from_config(QWEN3_MOE)
    setup = TrainingSetup.build(method, {"target_modules": "all-linear"}, seq_len=128)
    check_against(method, setup.options, arch, 128)
    traced = trace_step(arch, setup)
    assert estimate_memory(arch, setup).trainable_params == traced.trainable_params


def test_naming_an_expert_projection_as_a_lora_target_is_refused_with_the_reason() -> None:
    arch = Architecture.from_config(MIXTRAL)
    setup = TrainingSetup.build("lora", {"target_modules": ["q_proj", "down_proj"]}, seq_len=128)
    with pytest.raises(MethodError) as refused:
        check_against("lora", setup.options, arch, 128)
    assert refused.value.field == "target_modules"
    assert "down_proj" in str(refused.value) and "8 fused experts" in str(refused.value)
    assert "'attention' or 'all-linear'" in str(refused.value)


def test_all_linear_on_phi3_means_its_fused_projections() -> None:
    """Phi-3 fuses q/k/v and gate/up: all-linear is every Linear it has (peft's meaning), not Llama's names."""
    arch = load_catalog().architecture("phi-3-mini")
    setup = TrainingSetup.build("lora", {"target_modules": "all-linear", "r": 8}, seq_len=128)
    check_against("lora", setup.options, arch, 128)
    assert set(setup.lora_targets(arch)) == {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}


def test_an_moe_plan_row_says_what_it_assumes_of_the_experts() -> None:
    catalog = load_catalog()
    arch = catalog.architecture("mixtral-8x7b")
    gpus = [catalog.gpu("H100 80GB")]
    lora = instant_estimate(arch, TrainingSetup.build("lora", {}, seq_len=1024), gpus, catalog.runtime, RunLength())
    qlora = instant_estimate(arch, TrainingSetup.build("qlora", {}, seq_len=1024), gpus, catalog.runtime, RunLength())
    note = next(n for n in lora["notes"] if n.startswith("mixture of experts"))
    assert "8 experts, 2 per token" in note and "attention projections only" in note
    assert any("experts stay unquantised" in n for n in qlora["notes"])


@pytest.mark.parametrize(("change", "field"), [
    ({"num_experts_per_tok": 9}, "num_experts_per_tok"),
    ({"num_local_experts": 0}, "num_local_experts"),
    ({"num_local_experts": None}, "num_local_experts"),
])
def test_an_impossible_expert_count_names_its_config_field(change: dict[str, object], field: str) -> None:
    config = {**MIXTRAL, **change}
    config = {k: v for k, v in config.items() if v is not None}
    with pytest.raises(ArchitectureError) as refused:
        Architecture.from_config(config)
    assert refused.value.field == field

"""Architectures from config.json, and the catalogs in app/planner/data (pure Python, no torch)."""
from __future__ import annotations

import pytest

from app.planner.architecture import Architecture, ArchitectureError
from app.planner.catalog import load_catalog, slug
from app.planner.params import count_params
from tests.helpers.demo_config import DEMO

pytestmark = pytest.mark.unit


# Parameter counts the model cards publish (safetensors totals); they check every catalog number at once.
PUBLISHED_PARAMS = {
    "llama-2-7b": 6_738_415_616, "llama-2-13b": 13_015_864_320, "llama-2-70b": 68_976_648_192,
    "llama-65b": 65_285_660_672, "llama-3.1-8b": 8_030_261_248, "llama-3.1-70b": 70_553_706_496,
    "mistral-7b": 7_248_023_552, "qwen2.5-0.5b": 494_032_768, "qwen2.5-1.5b": 1_543_714_304,
    "qwen2.5-7b": 7_615_616_512, "qwen2.5-14b": 14_770_033_664, "qwen2.5-32b": 32_763_876_352,
    "qwen2.5-72b": 72_706_203_648, "phi-3-mini": 3_821_079_552, "gemma-2-2b": 2_614_341_888,
    "gemma-2-9b": 9_241_705_984, "gemma-2-27b": 27_227_128_320,
}


def test_demo_config_reads_every_number() -> None:
    arch = Architecture.from_config(DEMO)
    assert (arch.hidden_size, arch.num_layers, arch.num_heads, arch.num_kv_heads) == (256, 4, 4, 2)
    assert (arch.head_dim, arch.intermediate_size, arch.vocab_size, arch.max_positions) == (64, 688, 259, 512)
    assert arch.tie_embeddings is False and arch.family == "llama"


@pytest.mark.parametrize("field", ["hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                                   "vocab_size", "model_type"])
def test_missing_field_is_named(field: str) -> None:
    config = {k: v for k, v in DEMO.items() if k != field}
    with pytest.raises(ArchitectureError) as info:
        Architecture.from_config(config)
    assert info.value.field == field


def test_kv_heads_must_divide_heads() -> None:
    with pytest.raises(ArchitectureError) as info:
        Architecture.from_config({**DEMO, "num_key_value_heads": 3})
    assert info.value.field == "num_key_value_heads"


def test_gqa_shrinks_k_and_v_only() -> None:
    modules = Architecture.from_config(DEMO).linear_modules()
    assert modules["q_proj"] == (256, 256) and modules["k_proj"] == (256, 128) and modules["v_proj"] == (256, 128)


def test_gemma2_ties_embeddings_by_default_and_uses_its_head_dim() -> None:
    arch = load_catalog().architecture("gemma-2-9b")
    assert arch.tie_embeddings and arch.head_dim == 256 and arch.q_dim == 4096 != arch.hidden_size


def test_phi3_has_fused_projections() -> None:
    assert set(load_catalog().architecture("phi-3-mini").linear_modules()) == {
        "qkv_proj", "o_proj", "gate_up_proj", "down_proj"}


@pytest.mark.parametrize("model_id,published", sorted(PUBLISHED_PARAMS.items()))
def test_catalog_architectures_give_the_published_parameter_counts(model_id: str, published: int) -> None:
    assert count_params(load_catalog().architecture(model_id)).total == published


def test_tied_embeddings_are_counted_once() -> None:
    untied = Architecture.from_config(DEMO)
    tied = Architecture.from_config({**DEMO, "tie_word_embeddings": True})
    assert count_params(untied).total - count_params(tied).total == 259 * 256


def test_catalog_has_the_demo_model_and_the_gpus_the_issue_names() -> None:
    catalog = load_catalog()
    demo = catalog.architecture("demo")
    assert (demo.hidden_size, demo.intermediate_size, demo.num_layers, demo.num_heads, demo.num_kv_heads,
            demo.vocab_size, demo.tie_embeddings, demo.max_positions) == (256, 688, 4, 4, 2, 259, False, 512)
    for name in ["RTX 3090", "RTX 4090", "L4", "A10G", "A100 40GB", "A100 80GB", "L40S", "H100 80GB", "H200"]:
        gpu = catalog.gpu(name)
        assert gpu is not None and gpu.memory_bytes > 20 * 2**30 and gpu.bf16_tflops > 0
        assert set(gpu.utilisation) >= {"full", "lora", "qlora", "prompt"} and gpu.sources
    assert catalog.gpu("a100-80gb") is catalog.gpu("A100 80GB") and slug("H100 80GB") == "h100-80gb"
    assert catalog.models_as_of and catalog.gpus_as_of


def test_absurd_sizes_are_refused_not_looped_over() -> None:
    with pytest.raises(ArchitectureError) as info:
        Architecture.from_config({**DEMO, "num_hidden_layers": 10**9})
    assert info.value.field == "num_hidden_layers"

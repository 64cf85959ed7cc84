"""The catalog holds the models people fine-tune today, at their published sizes, and today's GPUs.

Each architecture's total parameter count comes from `app/planner/params.py` over the
entry's config.json numbers; it must land within 3 % of the size its model card
publishes (Gemma 3 4B-27B: the text decoder, without the SigLIP vision tower the
published total includes). The same configs were built with transformers 5.23 on
the meta device while writing them: every dense count matched to 0.01 %.
"""
from __future__ import annotations

import pytest

from app.methods import METHODS
from app.planner.catalog import load_catalog
from app.planner.params import count_params

pytestmark = pytest.mark.unit

# Published totals (model cards / technical reports), in parameters.
DENSE_SIZES: dict[str, float] = {
    "llama-3.2-1b": 1.24e9, "llama-3.2-3b": 3.21e9, "llama-3.3-70b": 70.6e9,
    "qwen3-0.6b": 0.6e9, "qwen3-1.7b": 1.7e9, "qwen3-4b": 4.0e9, "qwen3-8b": 8.2e9, "qwen3-14b": 14.8e9,
    "qwen3-32b": 32.8e9,
    "gemma-3-1b": 1.0e9, "gemma-3-4b": 3.88e9, "gemma-3-12b": 11.77e9, "gemma-3-27b": 27.0e9,
    "phi-4": 14.7e9, "phi-4-mini": 3.8e9, "mistral-small-3-24b": 23.6e9,
    "smollm2-135m": 135e6, "smollm2-360m": 362e6, "smollm2-1.7b": 1.71e9,
}
NEW_GPUS = ["T4 16GB", "L40", "RTX 5090 32GB", "B200", "H20", "MI300X"]


@pytest.mark.parametrize("model_id", sorted(DENSE_SIZES))
def test_a_new_dense_model_has_its_published_size(model_id: str) -> None:
    catalog = load_catalog()
    total = count_params(catalog.architecture(model_id)).total
    assert abs(total - DENSE_SIZES[model_id]) / DENSE_SIZES[model_id] < 0.03, f"{model_id}: {total / 1e9:.3f}B"


@pytest.mark.parametrize("model_id", sorted(DENSE_SIZES))
def test_a_new_model_cites_the_config_it_was_written_from(model_id: str) -> None:
    entry = load_catalog().model(model_id)
    assert entry is not None
    assert entry.source.startswith("https://huggingface.co/") and entry.source.endswith("/config.json")


def test_gemma3_entries_are_text_configs_that_transformers_reads() -> None:
    """gemma3_text is the decoder-only class (Gemma3ForCausalLM); the multimodal gemma3 wraps it."""
    catalog = load_catalog()
    for model_id in ("gemma-3-1b", "gemma-3-4b", "gemma-3-12b", "gemma-3-27b"):
        arch = catalog.architecture(model_id)
        assert arch.model_type == "gemma3_text" and arch.head_dim in (128, 256) and arch.tie_embeddings


@pytest.mark.parametrize("name", NEW_GPUS)
def test_a_new_gpu_has_memory_peak_price_and_a_utilisation_per_method(name: str) -> None:
    gpu = load_catalog().gpu(name)
    assert gpu is not None and gpu.memory_bytes >= 15 * 2**30 and gpu.bf16_tflops > 0
    assert set(gpu.utilisation) == set(METHODS)
    assert {"memory", "tflops", "price"} <= set(gpu.sources) and "editable default" in gpu.sources["price"]


def test_an_existing_install_gains_the_new_entries_and_keeps_its_edits(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from sqlmodel import Session, SQLModel, select

    from app.db import make_engine
    from app.models import CatalogGpu, CatalogModel
    from app.planner.db_catalog import seed_catalogs

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    SQLModel.metadata.create_all(engine)
    with Session(engine) as session:  # an install seeded by an earlier release, one price edited since
        session.add(CatalogGpu(id="h200", name="H200", memory_bytes=150754820096, bf16_tflops=989.4,
                               price_per_hour=1.0, utilisation={"lora": 0.35}, sources={}))
        session.add(CatalogModel(id="llama-2-7b", name="Llama 2 7B (edited)", source="", config={"model_type": "llama"}))
        session.commit()
        seed_catalogs(session)
        gpus = {g.name: g for g in session.exec(select(CatalogGpu))}
        models = {m.id: m for m in session.exec(select(CatalogModel))}
    assert set(NEW_GPUS) <= set(gpus) and gpus["H200"].price_per_hour == 1.0
    assert set(DENSE_SIZES) <= set(models) and models["llama-2-7b"].name == "Llama 2 7B (edited)"
    engine.dispose()

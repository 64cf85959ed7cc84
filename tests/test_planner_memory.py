"""The instant estimator, component by component, and the published points it must reproduce."""
from __future__ import annotations

import dataclasses

import pytest

from app.planner.architecture import Architecture
from app.planner.catalog import load_catalog
from app.planner.compute import flops_per_step
from app.planner.estimate import runtime_overhead
from app.planner.fit import make_it_fit
from app.planner.loss_memory import CHUNK
from app.planner.memory import estimate_memory
from app.planner.params import nf4_bytes_per_param, trainable_count
from app.planner.setup import TrainingSetup
from tests.helpers.demo_config import DEMO

pytestmark = pytest.mark.unit


GiB = 2**30


def _peak(model_id: str, method: str, options: dict | None = None, **kw: object) -> int:
    """Tensor peak plus runtime overhead, as the API reports it."""
    setup = TrainingSetup.build(method, options or {}, **kw)  # type: ignore[arg-type]
    tensors = estimate_memory(load_catalog().architecture(model_id), setup).peak
    return tensors + runtime_overhead(tensors, load_catalog().runtime)


def _acts(arch: Architecture, method: str, **kw: object) -> int:
    return estimate_memory(arch, TrainingSetup.build(method, {}, **kw)).saved_activations  # type: ignore[arg-type]


def test_lora_r8_on_q_and_v_trains_the_closed_form_count() -> None:
    arch = Architecture.from_config(DEMO)
    setup = TrainingSetup.build("lora", {"r": 8, "target_modules": "minimal"}, seq_len=128)
    h, kv = 256, 128
    assert trainable_count(arch, setup) == 4 * (8 * (h + h) + 8 * (h + kv)) == 28_672


def test_dora_adds_one_magnitude_per_output_feature() -> None:
    arch = Architecture.from_config(DEMO)
    lora = trainable_count(arch, TrainingSetup.build("lora", {"target_modules": "minimal"}, seq_len=128))
    dora = trainable_count(arch, TrainingSetup.build("dora", {"target_modules": "minimal"}, seq_len=128))
    assert dora - lora == 4 * (256 + 128)


def test_prefix_and_prompt_counts_follow_peft() -> None:
    arch = load_catalog().architecture("llama-3.1-8b")
    prefix = TrainingSetup.build("prefix", {"num_virtual_tokens": 200}, seq_len=512)
    prompt = TrainingSetup.build("prompt", {"num_virtual_tokens": 200}, seq_len=512)
    assert trainable_count(arch, prefix) == 200 * 2 * 32 * 1024  # p · 2 · L · kv_heads · head_dim
    assert trainable_count(arch, prompt) == 200 * 4096


def test_tied_embeddings_are_one_tensor_in_memory() -> None:
    untied = Architecture.from_config(DEMO)
    tied = Architecture.from_config({**DEMO, "tie_word_embeddings": True})
    setup = TrainingSetup.build("lora", {}, seq_len=128)
    diff = estimate_memory(untied, setup).breakdown["weights"] - estimate_memory(tied, setup).breakdown["weights"]
    assert diff == 2 * 259 * 256  # one bf16 vocab × hidden matrix fewer


def test_logits_buffer_grows_with_the_vocabulary() -> None:
    small = Architecture.from_config({**DEMO, "vocab_size": 32_000})
    large = Architecture.from_config({**DEMO, "vocab_size": 128_256})
    setup = TrainingSetup.build("lora", {}, seq_len=512, batch_size=2)
    small_logits = estimate_memory(small, setup).breakdown["logits"]
    large_logits = estimate_memory(large, setup).breakdown["logits"]
    assert large_logits > 3.9 * small_logits
    assert small_logits >= 4 * 32_000 * 1022  # one chunk of fp32 logits (the softmax is made in its storage)


def test_the_targets_only_loss_is_bounded_by_one_chunk() -> None:
    """The worker's loss holds one CHUNK of fp32 logits at a time, however long the batch; prompt tuning
    (peft's own forward) still makes the full logits (F6)."""
    arch = Architecture.from_config({**DEMO, "vocab_size": 32_000})
    logits = {s: estimate_memory(arch, TrainingSetup.build("lora", {}, seq_len=s, batch_size=4)).breakdown["logits"]
              for s in (1024, 4096)}
    assert logits[4096] < 1.1 * logits[1024] < 3 * 4 * CHUNK * 32_000
    prompt = TrainingSetup.build("prompt", {}, seq_len=512, batch_size=2)
    assert estimate_memory(arch, prompt).phases["backward_start"] > 12 * 32_000 * 2 * 511


def test_gradient_checkpointing_reduces_activations() -> None:
    arch = load_catalog().architecture("llama-2-7b")
    without = _acts(arch, "full", seq_len=2048, batch_size=4)
    with_gc = _acts(arch, "full", seq_len=2048, batch_size=4, gradient_checkpointing=True)
    assert with_gc < without / 10


def test_frozen_bottom_layers_keep_no_activations() -> None:
    arch = load_catalog().architecture("llama-2-7b")
    setup = TrainingSetup.build("freeze", {"trainable_layers": 8, "train_lm_head": False}, seq_len=1024)
    freeze = estimate_memory(arch, setup).saved_activations
    full = _acts(arch, "full", seq_len=1024)
    assert 0.2 * full < freeze < 0.27 * full  # 8 of 32 layers keep anything, not all 32


def test_peak_is_a_maximum_over_phases_not_a_sum() -> None:
    estimate = estimate_memory(load_catalog().architecture("llama-2-7b"), TrainingSetup.build("full", {}, seq_len=512))
    assert estimate.peak == max(estimate.phases.values())
    assert estimate.phase == "optimizer"  # at small token counts the step, not the forward, sets the peak (F0)


def test_foreach_adamw_adds_one_copy_of_the_states_dtype_at_step() -> None:
    arch = load_catalog().architecture("llama-2-7b")
    estimate = estimate_memory(arch, TrainingSetup.build("full", {}, seq_len=512))
    n = estimate.total_params
    # bf16 weights 2N + grads 2N + states 4N + foreach temporaries ≈ 2N
    assert 9.9 * n < estimate.phases["optimizer"] < 10.1 * n


def test_peft_adapters_are_fp32() -> None:
    arch = load_catalog().architecture("llama-2-7b")
    estimate = estimate_memory(arch, TrainingSetup.build("lora", {}, seq_len=512))
    n_t = estimate.trainable_params
    assert estimate.breakdown["trainable_weights"] == 4 * n_t
    assert estimate.breakdown["optimizer"] == 8 * n_t


def test_qlora_weights_are_nf4_plus_fp32_embeddings() -> None:
    arch = load_catalog().architecture("llama-3.1-8b")
    estimate = estimate_memory(arch, TrainingSetup.build("qlora", {}, seq_len=512))
    assert abs(nf4_bytes_per_param() - (0.5 + 1 / 64 + 4 / (64 * 256))) < 1e-12
    linear = 6_979_321_856
    frozen = estimate.breakdown["weights"]
    assert frozen > 2 * 4 * 128_256 * 4096  # embeddings and lm_head in fp32 (prepare_model_for_kbit_training)
    assert abs(frozen - (0.5159 * linear + 4 * (8_030_261_248 - linear))) < 0.001 * frozen


def test_paged_optimizer_states_are_left_out_of_the_device_peak() -> None:
    arch = load_catalog().architecture("qwen2.5-0.5b")
    plain = estimate_memory(arch, TrainingSetup.build("full", {}, optimizer="adamw_8bit", seq_len=256))
    paged = estimate_memory(arch, TrainingSetup.build("full", {}, optimizer="paged_adamw_8bit", seq_len=256))
    assert paged.paged > 0.9 * plain.breakdown["optimizer"] and paged.breakdown["optimizer"] < plain.breakdown["optimizer"]
    assert paged.notes and "paged" in paged.notes[0]


def test_published_qlora_65b_fits_a_48_gb_gpu_with_checkpointing_and_paged_8bit() -> None:
    """Dettmers et al. 2023: a 65B model fine-tuned on a single 48 GB GPU."""
    options = {"r": 64, "target_modules": "all-linear", "compute_dtype": "bfloat16"}
    peak = _peak("llama-65b", "qlora", options, optimizer="paged_adamw_8bit", seq_len=512, batch_size=1,
                 gradient_checkpointing=True)
    catalog = load_catalog()
    for name in ("RTX A6000", "L40S"):
        assert peak <= catalog.gpu(name).memory_bytes * (1 - catalog.runtime.fit_margin)  # type: ignore[union-attr]
    assert peak > 40 * GiB  # and it is a tight fit, not a trivial one


def test_published_full_finetune_7b_mixed_adamw_does_not_fit_80_gb() -> None:
    peak = _peak("llama-2-7b", "full", precision="mixed", seq_len=512, batch_size=1)
    assert peak > 80 * GiB
    assert peak > 16 * 6_738_415_616  # 4 weights + 4 grads + 8 AdamW states per parameter


def test_checkpointing_costs_a_recomputed_forward() -> None:
    arch = load_catalog().architecture("llama-2-7b")
    base = TrainingSetup.build("full", {}, seq_len=1024)
    ratio = flops_per_step(arch, dataclasses.replace(base, gradient_checkpointing=True)) / flops_per_step(arch, base)
    assert 1.25 < ratio < 1.34


def test_lora_needs_about_two_thirds_of_full_flops() -> None:
    arch = load_catalog().architecture("llama-2-7b")
    full = flops_per_step(arch, TrainingSetup.build("full", {}, seq_len=512))
    lora = flops_per_step(arch, TrainingSetup.build("lora", {}, seq_len=512))
    assert 0.6 < lora / full < 0.72


def test_make_it_fit_prefers_accumulation_to_checkpointing() -> None:
    catalog = load_catalog()
    arch = catalog.architecture("llama-3.1-8b")
    setup = TrainingSetup.build("lora", {}, seq_len=2048, batch_size=16)
    result = make_it_fit(arch, setup, catalog.gpu("A100 80GB"), catalog.runtime)  # type: ignore[arg-type]
    assert result.fits and not result.gradient_checkpointing
    assert result.batch_size * result.gradient_accumulation >= 16 and result.batch_size == result.max_batch_size
    tight = make_it_fit(arch, setup, catalog.gpu("RTX 4090"), catalog.runtime)  # type: ignore[arg-type]
    assert tight.fits and tight.gradient_checkpointing and tight.peak_bytes < 24 * GiB


def test_make_it_fit_says_why_nothing_fits() -> None:
    catalog = load_catalog()
    setup = TrainingSetup.build("full", {}, seq_len=2048)
    result = make_it_fit(catalog.architecture("llama-2-70b"), setup, catalog.gpu("RTX 4090"), catalog.runtime)  # type: ignore[arg-type]
    assert not result.fits and f"{result.over_bytes / GiB:.1f} GiB over" in result.reason  # issue 14, finding 6

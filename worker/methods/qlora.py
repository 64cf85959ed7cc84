"""QLoRA (Dettmers et al. 2023): LoRA over a base quantised to 4 bits.

The base is loaded through transformers' `BitsAndBytesConfig(load_in_4bit=True)`
(NF4 or FP4, optional double quantisation of the scales, the matmul dtype
the user picked), so every linear layer of the decoder becomes a
bitsandbytes `Linear4bit`; everything else (embeddings, norms, the head)
stays float32. The matmul dtype defaults to the job's precision's
(`app.methods.qlora.compute_dtype_for`: bfloat16 for bf16 and mixed, whose
step then runs under bf16 autocast as the planner prices it; float32 for fp32
and an unset precision); an explicit `compute_dtype` wins. `peft.prepare_model_for_kbit_training` then freezes the base,
keeps the non-quantised weights in float32 and turns on gradient
checkpointing when the job asks for it. LoRA goes on top with `lora.build`.

The adapter is a standard PEFT folder, like LoRA's. It was trained against
the 4-bit weights, so it gives the training-time logits only on a base
quantised the same way (`quantization_config` below, also recorded in the
folder's `tunedeck_training.json`); loaded onto the float32 base, as
`PeftModel.from_pretrained` does by default, it gives slightly different
logits (the quantisation error of the base), which is also what the merged
download holds (`worker.merge`: merged into the float32 base).

bitsandbytes 0.50 runs the 4-bit layers on the CPU as well as on CUDA; its
paged optimisers fall back to ordinary (non-paged) 8-bit ones on the CPU.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, PreTrainedModel

from app.methods import parse_options
from app.methods.qlora import QloraOptions, compute_dtype_for
from worker.methods import lora
from worker.methods.lora import merge, save  # noqa: F401 - the same PEFT folder and merge as LoRA

COMPUTE_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def quantization_config(method_config: QloraOptions | Mapping[str, Any],
                        precision: str | None = None) -> BitsAndBytesConfig:
    """The 4-bit settings of a QLoRA job; loading a base with them reproduces the training-time model.

    Takes the options as recorded in a download's `tunedeck_training.json` too: they are
    validated by the same options model the job was (`app.methods.qlora`). `precision`:
    the job's `hyperparameters.precision`, which the compute dtype follows unless set."""
    options = parse_options("qlora", method_config)  # type: ignore[arg-type]
    assert isinstance(options, QloraOptions)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=options.quant_type,
        bnb_4bit_use_double_quant=options.double_quant,
        bnb_4bit_compute_dtype=COMPUTE_DTYPES[compute_dtype_for(options, precision)],
    )


def load_quantized(model_path: str, method_config: QloraOptions | Mapping[str, Any],
                   precision: str | None = None) -> PreTrainedModel:
    """The base with its decoder linears in 4 bits, the rest float32, on the training device."""
    device = "cuda:0" if torch.cuda.is_available() else "cpu"
    try:
        import bitsandbytes  # noqa: F401 - fail with a clear message, not deep inside transformers
    except ImportError as exc:
        raise RuntimeError(f"QLoRA needs bitsandbytes, which does not import here: {exc}") from exc
    from app.catalog.trust import remote_code_allowed

    model = AutoModelForCausalLM.from_pretrained(
        model_path,
        quantization_config=quantization_config(method_config, precision),
        dtype=torch.float32,
        device_map={"": device},
        trust_remote_code=remote_code_allowed(model_path),  # only for a model an admin allowed
    )
    return without_cpu_packed_inference(model)


def without_cpu_packed_inference(model: torch.nn.Module) -> torch.nn.Module:
    """Keep bitsandbytes' 4-bit layers off their AVX512-BF16 CPU inference format.

    On a CPU with AVX512-BF16, a `Linear4bit` in eval mode without gradients
    repacks its weight for a CPU inference kernel the first time it runs.
    That repacking asserts that out_features is a multiple of 32, which
    fails on models that are not (the demo model's MLP has 688 outputs:
    "N must be divisible by block_n"), and it computes with another kernel
    than training does. Turning it off keeps inference on bitsandbytes'
    ordinary 4-bit matmul, on every CPU and for every shape, so the probe the
    trainer reports and a later load (`tunedeck generate`) compute alike.
    No effect on CUDA.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
    return model


def load(model_path: str, hyperparameters: Any, method_config: QloraOptions) -> PreTrainedModel:
    """Quantise at load, then prepare for k-bit training (gradient checkpointing if the job asks)."""
    from peft import prepare_model_for_kbit_training

    model = load_quantized(model_path, method_config, getattr(hyperparameters, "precision", None))
    with warnings.catch_warnings():
        # peft calls transformers' deprecated gradient_checkpointing_enable alias; the warning is about peft.
        warnings.filterwarnings("ignore", category=FutureWarning)
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=bool(hyperparameters.gradient_checkpointing),
            # Non-reentrant, as for every other method: gradients reach the adapters
            # behind the frozen embeddings without forcing inputs to require grad.
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    if hyperparameters.gradient_checkpointing:
        model.config.use_cache = False
    return model


def build(model: PreTrainedModel, method_config: QloraOptions) -> torch.nn.Module:
    """LoRA on the quantised base; the LoRA weights themselves stay float32."""
    if not getattr(model, "is_loaded_in_4bit", False):
        raise ValueError("QLoRA needs a base loaded in 4 bits (qlora.load); got a full-precision model")
    return lora.build(model, method_config)

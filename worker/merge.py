"""Merged downloads: a LoRA-family adapter folded into its base, as a plain model folder.

For LoRA, DoRA and QLoRA the job offers, beside the PEFT folder, a model
folder that `AutoModelForCausalLM.from_pretrained` loads with no peft at all:
the base reloaded in float32, the saved adapter loaded onto it with
`PeftModel.from_pretrained`, then `merge_and_unload()` (W + scale·B·A per
target; DoRA's magnitude/direction update folded in too).

QLoRA is merged into the dequantised base: the base is quantised exactly as
in training (the job's `BitsAndBytesConfig`), each 4-bit weight is
dequantised back to float32 with bitsandbytes' own `dequantize_4bit`, and the
adapter is merged into those weights. The merged folder therefore computes
what the job trained (4-bit base + adapter) up to float32 summation order,
in a plain float32 model that needs no bitsandbytes. (Merging into the
original float32 weights instead would add back the quantisation error the
adapter never saw; peft's merge on the 4-bit layer itself would re-quantise
the sum.)

The merged weights are saved in the dtype the base declares in its config
(float32 if it declares none), with the tokenizer and generation config.
"""
from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoTokenizer, PreTrainedModel

from app.catalog.trust import remote_code_allowed
from app.methods import recorded_spec
from app.storage import atomic_folder
from worker.methods import float32_base

FLOAT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
RECORD_NAME = "tunedeck_training.json"


def _declared_dtype(base_model_path: str) -> torch.dtype:
    config = AutoConfig.from_pretrained(base_model_path, trust_remote_code=remote_code_allowed(base_model_path))
    declared = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(declared, torch.dtype):
        return declared
    return FLOAT_DTYPES.get(str(declared), torch.float32)


def training_record(folder: Path) -> dict[str, Any]:
    """What the trainer wrote beside an artifact (method, options); {} when absent or unreadable."""
    path = folder / RECORD_NAME
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def dequantized_base(base_model_path: str, method_config: Mapping[str, Any]) -> PreTrainedModel:
    """The float32 base whose linear weights are the job's 4-bit weights, dequantised.

    Quantised with the job's own settings, so the weights are bit for bit the
    ones QLoRA trained against.
    """
    import bitsandbytes.functional as bnb_functional
    from bitsandbytes.nn import Linear4bit

    from worker.methods.qlora import load_quantized

    base = float32_base(base_model_path)
    quantized = load_quantized(base_model_path, method_config)
    layers = dict(base.named_modules())
    with torch.no_grad():
        for name, module in quantized.named_modules():
            if isinstance(module, Linear4bit):
                weight = bnb_functional.dequantize_4bit(module.weight.data, module.weight.quant_state)
                layers[name].weight.copy_(weight.to(torch.float32).reshape(layers[name].weight.shape))
    del quantized
    return base


def merged_model(adapter_dir: Path, base_model_path: str) -> PreTrainedModel:
    """The base with the PEFT adapter in `adapter_dir` merged into its weights (in memory).

    The float32 base, or for a QLoRA adapter the dequantised 4-bit base it trained on.
    """
    from peft import PeftModel

    config = training_record(adapter_dir).get("config") or {}
    spec = recorded_spec(config)
    if spec is not None and spec.quantized_base:
        base = dequantized_base(base_model_path, config.get("method_config") or {})
    else:
        base = float32_base(base_model_path)
    with warnings.catch_warnings():
        # peft 0.21 reads transformers' deprecated `is_gradient_checkpointing`; not the user's concern.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = PeftModel.from_pretrained(base, str(adapter_dir))
    merged = peft_model.merge_and_unload()
    if not isinstance(merged, PreTrainedModel):
        raise TypeError(f"merge_and_unload gave a {type(merged).__name__}, not a transformers model")
    return merged.eval()


def merge_into(adapter_dir: Path, base_model_path: str, out_dir: Path) -> None:
    """Write the merged model folder (weights, config, generation config, tokenizer) into `out_dir`."""
    merged = merged_model(adapter_dir, base_model_path)
    dtype = _declared_dtype(base_model_path)
    if dtype != torch.float32:
        merged = merged.to(dtype)
    merged.config.use_cache = True  # training may have turned it off; a download is for inference
    merged.save_pretrained(str(out_dir))
    tokenizer_src = adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else Path(base_model_path)
    AutoTokenizer.from_pretrained(str(tokenizer_src)).save_pretrained(str(out_dir))
    if (adapter_dir / RECORD_NAME).is_file():
        shutil.copyfile(adapter_dir / RECORD_NAME, out_dir / RECORD_NAME)


def merge_to_folder(adapter_dir: Path, base_model_path: str, merged_dir: Path) -> Path:
    """`merge_into` a temp sibling of `merged_dir`, then rename it into place (as artifacts are written)."""
    adapter_dir, merged_dir = Path(adapter_dir), Path(merged_dir)
    with atomic_folder(merged_dir) as tmp:
        merge_into(adapter_dir, base_model_path, tmp)
    return merged_dir

"""QLoRA (Dettmers et al. 2023): LoRA over a base quantised to 4-bit NF4 (bitsandbytes)."""
from __future__ import annotations

from dataclasses import replace
from typing import Literal

from pydantic import Field

from app.methods.lora import SPEC as LORA
from app.methods.lora import LoraOptions


class QloraOptions(LoraOptions):
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type of the frozen base")
    double_quant: bool = Field(True, description="Quantise the quantisation constants too (saves ~0.37 bit/param)")
    compute_dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Dtype of the matmuls; bfloat16 on GPUs that support it"
    )
    optimizer: Literal["paged_adamw_8bit", "adamw_8bit", "adamw"] = Field(
        "paged_adamw_8bit", description="Paged 8-bit AdamW keeps optimiser spikes off the GPU"
    )


SPEC = replace(
    LORA, name="qlora", label="QLoRA (4-bit base)", options=QloraOptions,
    trains="low-rank adapters beside the targets of a 4-bit base", quantized_base=True,
    optimizers=("paged_adamw_8bit", "adamw_8bit", "adamw"), default_optimizer="paged_adamw_8bit",
    requires=("bitsandbytes",),
)

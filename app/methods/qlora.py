"""QLoRA (Dettmers et al. 2023): LoRA over a base quantised to 4-bit NF4 (bitsandbytes).

The 4-bit matmuls compute in `compute_dtype`. Its default follows the run's
precision (bf16 or mixed: bfloat16 under bf16 autocast, as the QLoRA paper
and the HF Trainer's `bf16=True` run it; fp32, or a job that leaves precision
unset: float32), so the planner prices the time and the memory of the same
dtype and the job runs what was priced (`compute_dtype_for`). An explicit
value wins.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Literal, get_args

from pydantic import Field

from app.methods.lora import SPEC as LORA
from app.methods.lora import LoraOptions


ComputeDtype = Literal["float32", "bfloat16", "float16"]
COMPUTE_DTYPES: tuple[str, ...] = get_args(ComputeDtype)
# precision (the plan's, or a job's hyperparameters.precision; None: unset) -> the default compute dtype
PRECISION_COMPUTE: dict[str | None, str] = {"bf16": "bfloat16", "mixed": "bfloat16", "fp32": "float32", None: "float32"}
HALF = frozenset({"bfloat16", "float16"})


class QloraOptions(LoraOptions):
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type of the frozen base")
    double_quant: bool = Field(True, description="Quantise the quantisation constants too (saves ~0.37 bit/param)")
    compute_dtype: ComputeDtype | None = Field(
        None, description="Dtype of the 4-bit matmuls; default: the precision's (bfloat16 for bf16 and mixed, "
                          "float32 for fp32 or an unset job precision)"
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


def compute_dtype_for(options: object, precision: str | None) -> str:
    """The dtype the 4-bit matmuls run in: the option when set, else the precision's default.

    A half compute dtype also means the step runs under autocast in it (`autocast_for`)."""
    explicit = getattr(options, "compute_dtype", None)
    if explicit is None and isinstance(options, dict):
        explicit = options.get("compute_dtype")
    return str(explicit) if explicit else PRECISION_COMPUTE[precision]


def autocast_for(options: object, precision: str | None) -> str | None:
    """The autocast dtype of a QLoRA step: its compute dtype when that is a half type, else None.

    Why autocast and not only the 4-bit layers' own cast: bitsandbytes casts each
    layer's output back to its (float32) input, so without autocast the adapters,
    attention and the head all run and keep float32 tensors; the recipe the QLoRA
    paper trains with (the HF Trainer's bf16=True) runs the step under autocast."""
    dtype = compute_dtype_for(options, precision)
    return dtype if dtype in HALF else None

"""What every method declaration is made of: its options model, its traits and its check.

Why one declaration: submission, the planner (instant and traced), the form
and the trainer all need a method's options, defaults and limits. Read from
one `MethodSpec`, they cannot drift apart (they did, when each kept a copy).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict

from app.field_problem import FieldProblem
from app.planner.architecture import Architecture

TARGET_PRESETS: dict[str, list[str]] = {
    "minimal": ["q_proj", "v_proj"],
    "attention": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "all-linear": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}
Optimizer = Literal["adamw", "adamw_8bit", "sgd", "adafactor"]
Download = Literal["adapter", "merged"]
Artifact = Literal["peft", "model", "bottleneck"]
ADAPTER_LR = 2e-4  # LoRA-family and bottleneck adapters (the QLoRA paper, peft's examples)
FULL_LR = 2e-5  # every base weight trains: an order of magnitude lower


class MethodError(FieldProblem):
    """The model cannot take the method as configured; `field` names the option to fix."""


class MethodOptions(BaseModel):
    """A method's options; unknown keys are refused so a typo never trains with a default."""

    model_config = ConfigDict(extra="forbid")


def check_target_names(value: str | list[str]) -> str | list[str]:
    """A preset or a list of module names (the architecture check comes later, with the model)."""
    if isinstance(value, str) and value not in TARGET_PRESETS:
        raise ValueError(f"unknown preset {value!r}: use {', '.join(TARGET_PRESETS)} or a list of module names")
    if isinstance(value, list):
        if not value:
            raise ValueError("name at least one module")
        for name in value:
            if not name or not name.replace("_", "").replace(".", "").isalnum():
                raise ValueError(f"{name!r} is not a module name")
    return value


def resolve_targets(value: str | list[str], linear: Iterable[str] | None = None) -> list[str]:
    """A preset name (minimal, attention, all-linear) or an explicit list, as module names.

    `linear`: the names of the decoder layer's Linear modules, where the model is known. Then
    `all-linear` means what peft's preset means, every Linear but the output layer: Phi-3's fused
    qkv/gate_up and a mixture-of-experts model's attention projections (its experts are 3-D
    parameters, not Linear modules) rather than Llama's seven names."""
    if value == "all-linear" and linear is not None:
        return list(linear)
    return list(TARGET_PRESETS[value]) if isinstance(value, str) else list(value)


TargetModules = Annotated[str | list[str], AfterValidator(check_target_names)]


class TargetedOptions(MethodOptions):
    """Options of a method that acts on chosen Linear modules of every layer (LoRA family, GaLore).

    The subclass declares `target_modules: TargetModules` with its own default, where it wants
    it in the form's field order."""

    def resolved_targets(self, linear: Iterable[str] | None = None) -> list[str]:
        return resolve_targets(getattr(self, "target_modules"), linear)


def targets_in(arch: Architecture, targets: list[str]) -> dict[str, tuple[int, int]]:
    """The targeted Linear modules of one decoder layer; a name the model lacks is the user's to fix."""
    modules = arch.linear_modules()
    missing = [t for t in targets if t not in modules]
    experts = [t for t in missing if t in arch.expert_modules()]
    if experts:
        # peft's target_modules wraps nn.Linear modules; an MoE layer's experts are fused 3-D parameters
        # (and its router a bare weight). Refused rather than silently left untrained.
        raise MethodError("target_modules", f"{', '.join(experts)}: this mixture-of-experts model's MLP is "
                                            f"{arch.moe.num_experts} fused experts (3-D parameters, not Linear "
                                            f"modules), which LoRA's and GaLore's target_modules cannot wrap; "
                                            f"use the preset 'attention' or 'all-linear' (here: "
                                            f"{', '.join(modules)}) or name those projections")
    if missing:
        raise MethodError("target_modules", f"the model has no module named {', '.join(missing)}; "
                                            f"choose from {', '.join(modules)}")
    return {t: modules[t] for t in targets}


def no_check(options: Any, arch: Architecture) -> None:
    """Methods whose options fit any architecture."""


@dataclass(frozen=True)
class MethodSpec:
    """One fine-tuning method, as every layer of Tunedeck sees it."""

    name: str
    label: str
    options: type[MethodOptions]
    trains: str  # one line for people: what the method updates
    artifact: Artifact  # what the adapter download is and how it loads
    check: Callable[[Any, Architecture], None] = no_check  # the options against one architecture
    downloads: tuple[Download, ...] = ("adapter",)
    learning_rate: float = ADAPTER_LR
    # Why it cannot take gradient checkpointing, with what to do instead; None: it can.
    no_checkpointing: str | None = None
    optimizers: tuple[str, ...] = ("adamw", "adamw_8bit", "sgd", "adafactor")
    default_optimizer: str = "adamw"
    trains_base: bool = False  # every base weight trains (full, GaLore)
    low_rank_gradients: bool = False  # its optimiser projects the targets' gradients (GaLore)
    trains_last_layers: bool = False  # the last `trainable_layers` of the base train (freeze)
    lora: bool = False  # low-rank adapters beside `target_modules` (LoRA, DoRA, QLoRA)
    magnitude: bool = False  # a trainable magnitude per output channel of each target (DoRA)
    bottleneck: bool = False  # bottleneck modules inside each layer (`reduction_factor`, `config`)
    peft: bool = False  # a peft model: adapter weights, gradients and states stay fp32
    quantized_base: bool = False  # the frozen base is 4-bit (QLoRA)
    virtual_tokens: Literal["prefix", "prompt"] | None = None  # where its virtual tokens go
    requires: tuple[str, ...] = ()  # Python modules the worker needs for it

    @property
    def checkpointing(self) -> bool:
        return self.no_checkpointing is None

    @property
    def dpo_reference(self) -> Literal["adapter_disabled", "frozen_copy"] | None:
        """What DPO compares the trained model with: for LoRA-family adapters the base with the adapter
        switched off (no second copy); for full and freeze a frozen copy of the starting weights. None:
        the method does not take the DPO objective (GaLore's projected optimiser, bottleneck, prefix and
        prompt adapters, for now)."""
        if self.lora:
            return "adapter_disabled"
        if (self.trains_base and not self.low_rank_gradients) or self.trains_last_layers:
            return "frozen_copy"
        return None

    @property
    def no_padding_free(self) -> str | None:
        """Why it cannot take padding-free batches; None: it can."""
        if self.virtual_tokens is None:
            return None
        return (f"{self.label} prepends its virtual tokens to every row, so rows cannot share one packed row; "
                "use batching grouped (the default) or padded")

    def parse(self, value: MethodOptions | dict[str, Any] | None) -> MethodOptions:
        """Validated options; an instance of this method's model passes as is."""
        if isinstance(value, self.options):
            return value
        if isinstance(value, MethodOptions):
            value = value.model_dump()
        return self.options.model_validate(value or {})

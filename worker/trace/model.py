"""Build the model a job would train, on the `meta` device, with its method applied.

Why meta and then fake: a 70B model cannot be materialised on this machine,
and the step we trace only needs shapes, dtypes and which tensors require a
gradient. peft, our bottleneck adapters and GaLore's parameter groups all work
on a meta model; the parameters are then swapped for fake tensors (assigning
into `_parameters`, since `.to()` cannot move a fake model), keeping tied
weights tied: one tensor, counted once.

Methods reuse the worker's own builders (full, freeze, lora, dora, adapters,
prefix, prompt), so the trace measures the code a job runs. QLoRA's 4-bit base is emulated by `Fake4bitLinear` (bitsandbytes'
`Linear4bit` cannot be built on meta): a packed weight of the NF4 size and a
matmul that dequantizes into a transient weight on the forward and again on
the backward, which is what `MatMul4Bit` does; nothing else is saved.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from app.methods import resolve_targets
from app.methods.qlora import compute_dtype_for
from app.planner.architecture import Architecture
from app.planner.setup import TrainingSetup

DTYPES = {"bf16": torch.bfloat16, "mixed": torch.float32, "fp32": torch.float32}
COMPUTE_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def build_meta_model(arch: Architecture, dtype: torch.dtype, device: str = "meta") -> nn.Module:
    """`AutoModelForCausalLM.from_config` on meta (or a real device, to measure), attention through SDPA."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(**arch.hf_config())
    config.use_cache = False
    if getattr(config, "attn_logit_softcapping", None) is not None:
        # SDPA refuses softcapping; flash-attention 2 (what a GPU run uses) applies it in-kernel, same memory.
        config.attn_logit_softcapping = None
    if getattr(config, "sliding_window", None) is not None:
        # Flash-attention 2 applies the window in-kernel; SDPA would need an s×s mask per layer.
        # A window longer than any sequence keeps SDPA on its is_causal path (same memory).
        config.sliding_window = 2**30
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    # Gemma-2 refuses SDPA (no softcapping); on a GPU it trains with flash-attention 2,
    # whose memory is SDPA's. Set on the config the attention modules read at call time.
    model.config._attn_implementation = "sdpa"
    return model


class _Fake4bitMatmul(torch.autograd.Function):
    """Memory behaviour of bitsandbytes' `MatMul4Bit`: dequantize, multiply, save nothing."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, packed: torch.Tensor, out_features: int) -> torch.Tensor:
        ctx.shape = (out_features, x.shape[-1])
        ctx.dtype = x.dtype
        weight = torch.empty(ctx.shape, dtype=x.dtype, device=x.device)
        return nn.functional.linear(x, weight)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        weight = torch.empty(ctx.shape, dtype=grad.dtype, device=grad.device)
        return grad @ weight, None, None


class Fake4bitLinear(nn.Module):
    """A frozen linear layer stored as NF4 (+ double-quantised constants), computing in `compute_dtype`."""

    def __init__(self, in_features: int, out_features: int, packed_bytes: int, compute_dtype: torch.dtype) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.compute_dtype = compute_dtype
        self.weight = nn.Parameter(torch.empty(packed_bytes, dtype=torch.uint8, device="meta"), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inp_dtype = x.dtype
        out = _Fake4bitMatmul.apply(x.to(self.compute_dtype), self.weight, self.out_features)
        return out.to(inp_dtype)


def _quantize_base(model: nn.Module, setup: TrainingSetup, bytes_per_param: float) -> None:
    """Swap every LoRA-wrapped base Linear (and every other decoder Linear) for `Fake4bitLinear`."""
    compute = COMPUTE_DTYPES[compute_dtype_for(setup.options_dict, setup.precision)]
    head = model.get_output_embeddings()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and child is not head and child.weight.dtype.is_floating_point:
                if child.weight.requires_grad:
                    continue  # a LoRA A/B matrix
                packed = int(round(child.in_features * child.out_features * bytes_per_param))
                setattr(parent, name, Fake4bitLinear(child.in_features, child.out_features, packed, compute))


def apply_method(model: nn.Module, arch: Architecture, setup: TrainingSetup, dtype: torch.dtype) -> nn.Module:
    """Make `model` what the job trains: frozen parts frozen, adapters in place."""
    options, spec, method = setup.options, setup.spec, setup.method
    if setup.uses_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if spec.trains_base:
        return model
    if spec.quantized_base:
        from app.planner.params import nf4_bytes_per_param

        for param in model.parameters():
            param.requires_grad_(False)
            if param.dtype in (torch.bfloat16, torch.float16):  # prepare_model_for_kbit_training's fp32 casts
                param.data = torch.empty_like(param, dtype=torch.float32, device="meta")
        from worker.methods import lora

        model = lora.build(model, options)
        nf4 = nf4_bytes_per_param(setup.options_dict["quant_type"], setup.options_dict["double_quant"])
        _quantize_base(model, setup, nf4)
        return model
    from worker.methods import get_method

    if spec.virtual_tokens == "prompt":
        options = options.model_copy(update={"init": "random", "init_text": None})  # same memory; no tokenizer
    return get_method(method).build(model, options)


def galore_param_groups(model: nn.Module, setup: TrainingSetup) -> list[dict[str, Any]]:
    """GaLore's parameter groups: projected target matrices, plain AdamW for the rest."""
    from worker.methods.targets import linear_names

    targets = resolve_targets(setup.options_dict["target_modules"], linear_names(model))
    projected, plain = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        module_name = name.rsplit(".", 2)[-2] if name.count(".") >= 1 else name
        if param.dim() == 2 and module_name in targets:
            projected.append(param)
        else:
            plain.append(param)
    options = setup.options_dict
    groups: list[dict[str, Any]] = [{"params": plain}]
    if projected:
        groups.append({
            "params": projected, "rank": int(options["rank"]), "update_proj_gap": int(options["update_proj_gap"]),
            "scale": float(options["scale"]), "proj_type": "std",
        })
    return [g for g in groups if g["params"]]


def fakeify(model: nn.Module, move: Any) -> None:
    """Replace every parameter and buffer with a fake CPU tensor (call inside FakeTensorMode).

    The memo keeps tied weights tied. `move(tensor, category)` files each new
    storage as trainable or frozen weights.
    """
    memo: dict[int, nn.Parameter] = {}
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is None:
                continue
            fake = memo.get(id(param))
            if fake is None:
                fake = nn.Parameter(torch.empty(param.shape, dtype=param.dtype), requires_grad=param.requires_grad)
                memo[id(param)] = fake
                move(fake, "trainable_weights" if param.requires_grad else "weights")
            module._parameters[name] = fake
        for name, buffer in list(module._buffers.items()):
            if buffer is not None:
                module._buffers[name] = torch.empty(buffer.shape, dtype=buffer.dtype)

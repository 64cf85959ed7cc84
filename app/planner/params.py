"""Parameter inventories: every weight tensor of the base model and of each method's trainable part.

Why tensors and not just counts: optimisers treat tensors differently by
shape (bitsandbytes keeps 32-bit states for tensors under 4096 elements and
pages only those of at least 1e5; Adafactor factors matrices; GaLore projects
only its target matrices; foreach AdamW allocates per parameter group), so
the memory model needs the shapes. A tensor repeated in every layer is one
`TensorSpec` with a `count`, so a 80-layer model is still a short list.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import prod

from app.methods import MethodError, targets_in
from app.planner.architecture import Architecture
from app.planner.moe import expert_shapes
from app.planner.setup import TrainingSetup

__all__ = ["MethodError", "TensorSpec", "ParamCounts", "base_tensors", "count_params", "lora_targets",
           "trainable_tensors", "trainable_count", "nf4_bytes_per_param", "layer_tensors"]

NF4_BLOCK = 64  # bitsandbytes quantize_4bit default blocksize
DQ_BLOCK = 256  # blocksize of the second quantisation of the absmax constants


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    count: int = 1

    @property
    def numel(self) -> int:
        return prod(self.shape)

    @property
    def total(self) -> int:
        return self.numel * self.count


@dataclass(frozen=True)
class ParamCounts:
    total: int
    embedding: int
    lm_head: int  # 0 when tied to the embedding
    linear: int  # decoder Linear weights: what 4-bit quantisation replaces
    other: int  # norms, biases: kept in fp32 under QLoRA


def nf4_bytes_per_param(quant_type: str = "nf4", double_quant: bool = True) -> float:
    """0.5 B of codes + the fp32 absmax per 64-block, itself 8-bit per 256 blocks with double quantisation."""
    del quant_type  # fp4 and nf4 pack the same way
    if double_quant:
        return 0.5 + 1 / NF4_BLOCK + 4 / (NF4_BLOCK * DQ_BLOCK)
    return 0.5 + 4 / NF4_BLOCK


def layer_tensors(arch: Architecture) -> list[TensorSpec]:
    """One decoder layer's weights (Linear weights as (out, in)); an MoE layer's every expert."""
    modules = arch.linear_modules()
    tensors = [TensorSpec(name, (d_out, d_in)) for name, (d_in, d_out) in modules.items()]
    tensors += [TensorSpec(f"{name}.bias", (modules[name][1],)) for name in arch.biased_modules if name in modules]
    tensors += [TensorSpec("norm", (arch.hidden_size,), arch.norms_per_layer)]
    if arch.qk_norm:
        tensors.append(TensorSpec("qk_norm", (arch.head_dim,), 2))  # q_norm and k_norm
    if arch.attention_sinks:
        tensors.append(TensorSpec("sinks", (arch.num_heads,)))
    if arch.moe is not None:
        tensors += [TensorSpec(name, shape) for name, shape in expert_shapes(arch.moe, arch.hidden_size)]
    return tensors


def base_tensors(arch: Architecture) -> list[TensorSpec]:
    """Every weight of the model, tied embeddings once."""
    layers = [TensorSpec(t.name, t.shape, t.count * arch.num_layers) for t in layer_tensors(arch)]
    tensors = [TensorSpec("embed_tokens", (arch.vocab_size, arch.hidden_size)), *layers,
               TensorSpec("final_norm", (arch.hidden_size,))]
    if not arch.tie_embeddings:
        tensors.append(TensorSpec("lm_head", (arch.vocab_size, arch.hidden_size)))
    return tensors


def count_params(arch: Architecture) -> ParamCounts:
    tensors = base_tensors(arch)
    embedding = arch.vocab_size * arch.hidden_size
    modules = arch.linear_modules()  # not an MoE router or its experts: bitsandbytes leaves those alone
    linear = sum(t.total for t in tensors if len(t.shape) == 2 and t.name in modules)
    head = 0 if arch.tie_embeddings else embedding
    total = sum(t.total for t in tensors)
    return ParamCounts(total=total, embedding=embedding, lm_head=head, linear=linear,
                       other=total - linear - embedding - head)


def lora_targets(arch: Architecture, targets: list[str]) -> dict[str, tuple[int, int]]:
    """The targeted Linear modules; unknown names are the user's error (`app.methods.targets_in`)."""
    return targets_in(arch, targets)


def trainable_tensors(arch: Architecture, setup: TrainingSetup) -> list[TensorSpec]:
    """What the method trains, as tensors (adapters are new tensors; full/freeze/galore train base ones).

    The options were checked against `arch` first (`app.methods.check_against`)."""
    spec, opts, L, h = setup.spec, setup.options_dict, arch.num_layers, arch.hidden_size
    if spec.trains_base:
        return base_tensors(arch)
    if spec.trains_last_layers:
        k = int(opts["trainable_layers"])
        tensors = [TensorSpec(t.name, t.shape, t.count * k) for t in layer_tensors(arch)]
        tensors.append(TensorSpec("final_norm", (h,)))
        embed = TensorSpec("embed_tokens", (arch.vocab_size, h))
        if arch.tie_embeddings:
            if opts["train_lm_head"] or opts["train_embeddings"]:
                tensors.append(embed)
        else:
            if opts["train_lm_head"]:
                tensors.append(TensorSpec("lm_head", (arch.vocab_size, h)))
            if opts["train_embeddings"]:
                tensors.append(embed)
        return tensors
    if spec.lora:
        r = int(opts["r"])
        tensors = []
        for name, (d_in, d_out) in lora_targets(arch, setup.lora_targets(arch)).items():
            tensors += [TensorSpec(f"{name}.lora_A", (r, d_in), L), TensorSpec(f"{name}.lora_B", (d_out, r), L)]
            if spec.magnitude:
                tensors.append(TensorSpec(f"{name}.magnitude", (d_out,), L))
        return tensors
    if spec.bottleneck:
        m = h // int(opts["reduction_factor"])
        per_layer = 2 if opts["config"] == "houlsby" else 1
        n = L * per_layer
        return [TensorSpec("adapter.down", (m, h), n), TensorSpec("adapter.down.bias", (m,), n),
                TensorSpec("adapter.up", (h, m), n), TensorSpec("adapter.up.bias", (h,), n)]
    p = setup.virtual_tokens
    if spec.virtual_tokens == "prefix":
        return [TensorSpec("prefix_encoder", (p, 2 * L * arch.kv_dim))]
    return [TensorSpec("prompt_embeddings", (p, h))]


def trainable_count(arch: Architecture, setup: TrainingSetup) -> int:
    return sum(t.total for t in trainable_tensors(arch, setup))

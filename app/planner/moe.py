"""Mixture-of-experts terms: the experts' weights, what their forward keeps, and their FLOPs.

Why a module of its own: a sparse MoE block replaces the dense MLP with E experts of which each
token runs k, so its terms differ in kind from a dense layer's. Every expert's weights are
resident (and, trained in full, have gradients and optimiser states), while the activations and
the FLOPs scale with the k experts a token is routed to, plus a router (E × h) whose logits,
softmax and top-k every token computes. The formulas follow what transformers 5.23 runs by
default (`experts_implementation="grouped_mm"`, `transformers/integrations/moe.py`
`grouped_mm_experts_forward`): the T·k (token, expert) rows are sorted by expert and gathered
(`hidden[perm // k]`), one grouped matmul makes every row's gate|up output (2f wide), the gate
activation, a second grouped matmul `down`, the product with the routing weight, the rows put
back in token order (`[inv_perm]`) and summed over k. The 3-D expert weights are
`nn.Parameter`s, not `nn.Linear`s: bitsandbytes does not quantise them (QLoRA keeps them in
fp32, as `prepare_model_for_kbit_training` casts them) and peft's `target_modules` cannot wrap
them. Checked against the traced step (`worker.trace`, a FLOP formula for `aten._grouped_mm`
there) on small Mixtral- and Qwen3-MoE-style configs: tests/test_planner_moe.py.

Sources: Mixtral (Jiang et al. 2024, "Mixtral of Experts", §2.1: softmax over the top-k
logits, equivalently renormalised top-k of the softmax); Qwen3-MoE
(`modeling_qwen3_moe.Qwen3MoeTopKRouter`: softmax in fp32, top-k, optional `norm_topk_prob`);
gpt-oss (`modeling_gpt_oss`: top-k of the biased logits, then their softmax; a clamped
SwiGLU `(up + 1) · gate · σ(α · gate)` with biases on every expert projection).
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

IDX = 8  # int64 indices (top-k, the sort's permutation)
FP32 = 4

# model_type -> (experts key(s), experts-per-token key(s), expert width key); first key found wins.
KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "mixtral": (("num_local_experts",), ("num_experts_per_tok",), "intermediate_size"),
    "qwen3_moe": (("num_experts",), ("num_experts_per_tok",), "moe_intermediate_size"),
    "gpt_oss": (("num_local_experts",), ("num_experts_per_tok", "experts_per_token"), "intermediate_size"),
}
MOE_TYPES = frozenset(KEYS)


class MoeShape(BaseModel):
    """One sparse MoE block's numbers (every decoder layer has one)."""

    model_config = ConfigDict(frozen=True)

    num_experts: int
    top_k: int
    intermediate: int  # each expert's width f
    style: str  # "mixtral", "qwen3_moe" or "gpt_oss": how the router scores and the gate activates
    norm_topk: bool = True  # renormalise the top-k probabilities (Mixtral always; Qwen3 norm_topk_prob)

    @property
    def biased(self) -> bool:
        """gpt-oss: biases on the router and on both expert projections."""
        return self.style == "gpt_oss"

    @property
    def gate_saved(self) -> int:
        """f-wide tensors per routed row the gate activation keeps: SwiGLU keeps gate|up (2f) and
        silu(gate); gpt-oss's clamped SwiGLU keeps gate|up, the clamped gate, σ(α·gate), up + 1
        and their product."""
        return 6 if self.style == "gpt_oss" else 3


def parse_moe(config: dict[str, Any], model_type: str) -> MoeShape | None:
    """The MoE block of a Mixtral, Qwen3-MoE or gpt-oss config.json (None for a dense model type).

    A missing or impossible key is an `ArchitectureError` naming it: a wrong expert count would
    silently misprice every expert's memory."""
    from app.planner.architecture import ArchitectureError, _positive_int

    if model_type not in KEYS:
        return None
    experts_keys, k_keys, width_key = KEYS[model_type]
    experts = _positive_int(config, experts_keys)
    top_k = _positive_int(config, k_keys)
    if len(k_keys) > 1 and all(key in config for key in k_keys) and config[k_keys[0]] != config[k_keys[1]]:
        raise ArchitectureError(k_keys[1], f"{config[k_keys[1]]!r} disagrees with {k_keys[0]}={config[k_keys[0]]!r}")
    if top_k > experts:
        raise ArchitectureError(k_keys[0], f"{top_k} experts per token is more than the {experts} experts "
                                           f"({experts_keys[0]})")
    width = _positive_int(config, (width_key,))
    norm = True
    if model_type == "qwen3_moe":
        norm = config.get("norm_topk_prob", False)
        if not isinstance(norm, bool):
            raise ArchitectureError("norm_topk_prob", "must be true or false")
        if config.get("decoder_sparse_step", 1) != 1:
            raise ArchitectureError("decoder_sparse_step", "only 1 (every layer sparse, as every published "
                                                           "Qwen3-MoE) is planned; dense layers between are not")
        if config.get("mlp_only_layers") not in (None, []):
            raise ArchitectureError("mlp_only_layers", "must be empty: dense layers among the sparse ones are "
                                                       "not planned")
    return MoeShape(num_experts=experts, top_k=top_k, intermediate=width, style=model_type, norm_topk=norm)


def expert_shapes(moe: MoeShape, h: int) -> list[tuple[str, tuple[int, ...]]]:
    """One layer's MoE weights as (name, shape): all E experts are resident, whatever k is."""
    e, f = moe.num_experts, moe.intermediate
    shapes: list[tuple[str, tuple[int, ...]]] = [
        ("router", (e, h)), ("experts.gate_up_proj", (e, 2 * f, h)), ("experts.down_proj", (e, h, f))]
    if moe.biased:
        shapes += [("router.bias", (e,)), ("experts.gate_up_proj_bias", (e, 2 * f)),
                   ("experts.down_proj_bias", (e, h))]
    return shapes


def moe_saved(moe: MoeShape, h: int, expert_bytes: int, logit_bytes: int, grad_in: bool, trainable: bool,
              autocast: bool) -> tuple[float, float]:
    """(bytes per token, bytes per layer) one MoE block keeps for the backward.

    `expert_bytes`: the experts' dtype (their grouped matmuls are not autocast: they run in the
    weights' dtype); `logit_bytes`: the router logits' (bf16 under autocast). `grad_in`: does the
    block's input need a gradient; `trainable`: do the router and experts train.
    """
    if not (grad_in or trainable):
        return 0.0, 0.0
    k, f, e = moe.top_k, moe.intermediate, moe.num_experts
    token = 0.0
    weight = 0.0
    # Router: its input for the weight gradient (autocast: its bf16 cast), the weight's bf16 cast.
    if trainable:
        token += (2 if autocast else expert_bytes) * h
    if autocast and grad_in:
        weight += 2 * e * h
    if moe.style == "gpt_oss":
        token += IDX * k + logit_bytes * k  # top-k indices; softmax over the k logits, in their dtype
        score_bytes = logit_bytes
    else:
        token += FP32 * e + IDX * k  # fp32 softmax over every expert; top-k indices
        token += FP32 * (k + 1) if moe.norm_topk else 0  # the renormalisation's operands
        score_bytes = FP32 if moe.style == "mixtral" else logit_bytes
    # Gather, sort and scatter: the gather's, the scores' and the un-permute's int64 indices.
    token += IDX * k * (3 if grad_in else 2)
    rows = float(k)
    token += rows * (expert_bytes * h if trainable else 0)  # gathered rows, for the up weight gradient
    token += rows * moe.gate_saved * f * expert_bytes  # gate|up output and the activation's operands
    token += rows * (expert_bytes * f if trainable else 0)  # down's input, for its weight gradient
    token += rows * (expert_bytes * h + score_bytes)  # the routing product: down's output and the score
    if moe.biased and trainable:
        token += IDX * k  # the expert ids the bias gathers use
    return token, weight


def moe_flops(moe: MoeShape, h: int, tokens: int, flows: bool, trainable: bool) -> tuple[float, float]:
    """(forward, backward) FLOPs of one MoE block over `tokens` tokens, as `torch.utils.flop_counter`
    counts them: the router's product over every token, the two grouped matmuls over the T·k routed
    rows (2·rows·h·2f and 2·rows·f·h), their input gradients where one flows, weight gradients
    where they train. Elementwise work (softmax, activation, routing product) is not counted."""
    rows = tokens * moe.top_k
    router = 2.0 * tokens * h * moe.num_experts
    experts = 2.0 * rows * h * 2 * moe.intermediate + 2.0 * rows * moe.intermediate * h
    fwd = router + experts
    products = router + experts
    bwd = (products if flows else 0.0) + (products if trainable else 0.0)
    return fwd, bwd


def moe_transient(moe: MoeShape, h: int, expert_bytes: int, trainable: bool) -> float:
    """Bytes per token an MoE block holds beyond what it keeps, at its worst moment: the routed
    product (k rows of h per token) while down's output is still kept, and, when the experts are
    frozen, the gathered input rows the forward's local variable holds until the block returns.

    It sets the peak where a block's forward runs on top of everything already kept: the last
    layer's forward, and the recompute of a checkpointed layer before its backward. (A dense MLP's
    locals are h- and f-wide per token, small beside the logits; an MoE block's are k times that.)
    Traced on small Mixtral/Qwen3-MoE configs, e.g. LoRA bf16 with checkpointing: 1.72 MiB over
    the kept set at 512 tokens, k 4, h 256; this term 2.0 MiB."""
    return moe.top_k * h * expert_bytes * (1 if trainable else 2)


def moe_note(moe: MoeShape, lora: bool, galore: bool, quantized: bool) -> str:
    """What a plan row of a mixture-of-experts model assumes, in one line for its notes."""
    note = (f"mixture of experts ({moe.num_experts} experts, {moe.top_k} per token): every expert's weights are "
            f"resident; activations and FLOPs count the {moe.top_k} experts each token runs, plus the router")
    if lora or galore:
        what = "LoRA wraps" if lora else "GaLore projects"
        note += (f"; {what} the attention projections only (all-linear means those here): the experts are 3-D "
                 "parameters, not Linear modules")
    if quantized:
        note += ("; bitsandbytes quantises Linear modules only, so the experts stay unquantised and "
                 "prepare_model_for_kbit_training casts them to fp32")
    return note

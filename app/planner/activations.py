"""Saved activations: what autograd keeps from the forward pass, layer by layer.

Why op by op instead of a "34·h per token" constant: the bytes depend on what
trains. A frozen Linear keeps only its weight (no input), a trainable one
keeps its input; peft casts each targeted module's input to fp32 and keeps
the dropout output and a 1-byte mask; below the lowest trainable tensor no
gradient flows and nothing is kept at all; RMSNorm keeps an fp32 copy of its
input only if a gradient must pass through it. Each rule below is one of those
facts, checked against the traced step (`worker.trace`) on the
transformers, peft and torch versions the project pins; the counts are per
query token unless a name says "weight" (tensors the size of a weight, kept
once per layer whatever the batch).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from app.methods.qlora import autocast_for
from app.planner.architecture import Architecture
from app.planner.moe import moe_saved
from app.planner.setup import TrainingSetup

FP32 = 4
MASK = 1  # native_dropout's bool mask
IDS = 8  # int64 token ids


@dataclass(frozen=True)
class Numerics:
    """Bytes per element of the tensors a layer makes, for one precision."""

    linear: int  # Linear outputs
    attn: int  # q/k/v/out as SDPA keeps them
    resid: int  # residual stream and norm outputs
    head: int  # the output layer's logits
    lora_in: int  # the adapter input LoRA's A keeps (fp32 adapters; bf16 under autocast)
    lora_cast: bool  # peft casts the module input to the adapter dtype: a new tensor
    autocast: bool  # mixed: every Linear casts its input and weight to bf16 and keeps the casts
    autocast_peft: bool = False  # QLoRA in bf16: autocast reaches the adapters and the head, not the 4-bit base


def numerics(setup: TrainingSetup) -> Numerics:
    """Dtypes of what a layer makes under this precision (QLoRA: fp32 outside its 4-bit linears)."""
    if setup.spec.quantized_base:
        bf16 = autocast_for(setup.options_dict, setup.precision) is not None  # default: the precision's
        low = 2 if bf16 else 4
        return Numerics(linear=4, attn=low, resid=4, head=low, lora_in=low, lora_cast=False,
                        autocast=False, autocast_peft=bf16)
    if setup.precision == "bf16":
        return Numerics(linear=2, attn=2, resid=2, head=2, lora_in=4, lora_cast=True, autocast=False)
    if setup.precision == "mixed":
        return Numerics(linear=2, attn=2, resid=4, head=2, lora_in=2, lora_cast=False, autocast=True)
    return Numerics(linear=4, attn=4, resid=4, head=4, lora_in=4, lora_cast=False, autocast=False)


@dataclass(frozen=True)
class LayerPlan:
    """What trains in one decoder layer."""

    base_trainable: bool = False  # full, galore, the unfrozen layers of freeze
    targets: dict[str, tuple[int, int]] = field(default_factory=dict)  # LoRA-family targets: (in, out)
    r: int = 0
    dropout: bool = False
    dora: bool = False
    adapter: int = 0  # bottleneck size of AdapterHub adapters (0: none)
    houlsby: bool = False
    prefix: int = 0  # prefix tuning's virtual key/value positions


@dataclass
class Saved:
    """Bytes kept: `token` per query token, `weight` once per layer."""

    token: float = 0.0
    weight: float = 0.0

    def add(self, other: "Saved") -> None:
        self.token += other.token
        self.weight += other.weight


def norm_saved(arch: Architecture, num: Numerics, grad_in: bool, trainable: bool, out_kept: bool) -> Saved:
    """RMSNorm: fp32 input and 1/rms when a gradient passes; the normalised input when its weight trains."""
    h = arch.hidden_size
    kept = Saved(token=(FP32 * h + FP32) if grad_in else 0.0)  # the input (or its fp32 copy) and rsqrt
    if arch.family == "gemma2":
        kept.token += FP32 * h if trainable else 0.0  # x·rsqrt in fp32, kept by the (1 + w) multiply
        if out_kept and num.resid < FP32 and trainable:
            kept.token += num.resid * h  # the cast back, kept by trainable q/k/v or gate/up
        kept.weight += FP32 * h if grad_in else 0.0  # (1 + w) in fp32
    else:
        kept.token += num.resid * h if trainable else 0.0  # normalised input, for the weight's gradient
    return kept


def _consumers(arch: Architecture, num: Numerics, plan: LayerPlan, u_bytes: int, d_in: int, grad_in: bool,
               names: list[str], u_already_kept: bool = False) -> tuple[Saved, dict[str, bool]]:
    """Linears reading one input `u`: what they keep, and whether each output needs a gradient."""
    saved = Saved()
    keep_u = False
    out_grad: dict[str, bool] = {}
    for name in names:
        d_out = arch.linear_modules()[name][1]
        out_grad[name] = grad_in or plan.base_trainable or name in plan.targets
        if plan.base_trainable:
            if num.autocast:
                saved.token += 2 * d_in  # each Linear's own bf16 cast of its fp32 input
            else:
                keep_u = True
        if num.autocast and grad_in:
            saved.weight += 2 * d_in * d_out  # the bf16 cast of the weight, kept for the input gradient
        if name in plan.targets:
            saved.add(_lora_input(num, plan, d_in, d_out, grad_in))
            if not plan.dropout and not (num.lora_cast or num.autocast or num.autocast_peft):
                keep_u = True  # A keeps `u` itself
    if keep_u and not u_already_kept:
        saved.token += u_bytes * d_in
    return saved, out_grad


def _lora_input(num: Numerics, plan: LayerPlan, d_in: int, d_out: int, grad_in: bool) -> Saved:
    """One LoRA/DoRA module: its (cast, dropped-out) input, mask and A output."""
    saved = Saved()
    if plan.dropout:
        saved.token += num.lora_in * d_in + (MASK * d_in if grad_in else 0)
    elif num.lora_cast or num.autocast or num.autocast_peft:
        saved.token += num.lora_in * d_in
    saved.token += num.lora_in * plan.r
    if plan.dora and plan.dropout:
        saved.token += 2 * FP32 * d_out  # base and LoRA outputs recomputed in fp32 for the rescale
        saved.weight += 3 * FP32 * d_out + (FP32 * d_in * d_out if grad_in else 0)  # weight norm; W in fp32
    elif plan.dora:
        # Without dropout peft rescales the base layer's own output rather than recomputing x·Wᵀ
        # through an fp32 copy of W: it keeps that output and the LoRA output, and no copy of W.
        saved.token += (num.linear + num.lora_in) * d_out
        saved.weight += 3 * FP32 * d_out  # magnitude / weight norm
    if num.autocast or num.autocast_peft:
        saved.weight += 2 * plan.r * (d_in + d_out)  # bf16 casts of A and B
    return saved


def _adapter(num: Numerics, plan: LayerPlan, h: int) -> float:
    """A bottleneck adapter keeps its input (for `down`) and its activation output (for `up`)."""
    return num.linear * h + num.linear * plan.adapter


def _attention(arch: Architecture, num: Numerics, plan: LayerPlan, tokens: int) -> float:
    """What SDPA keeps: q, k, v, the output and the log-sum-exp (flash/efficient kernels: O(s))."""
    qd, kvd, a = arch.q_dim, arch.kv_dim, arch.num_heads
    kept = num.attn * 2 * qd + FP32 * a  # rotated q, output, logsumexp
    if plan.prefix:
        # The prefix cache comes with a mask: k/v are expanded to every head and the mask is kept.
        kv_len = (tokens + plan.prefix) / tokens
        kept += 2 * num.attn * qd * kv_len + num.attn * (tokens + plan.prefix)
    elif arch.family == "phi3":
        kept += num.attn * kvd + num.linear * (qd + 2 * kvd)  # rotated k; v is a view of the fused qkv output
    else:
        kept += num.attn * kvd + min(num.attn, num.linear) * kvd  # rotated k, v (cast if SDPA runs lower)
    return kept


def layer_saved(arch: Architecture, num: Numerics, plan: LayerPlan, grad_in: bool, tokens: int) -> tuple[Saved, bool]:
    """Bytes one decoder layer keeps for the backward; `grad_in`: does its input require a gradient."""
    h, qd = arch.hidden_size, arch.q_dim
    train = plan.base_trainable
    out = Saved()
    out.add(norm_saved(arch, num, grad_in, train, out_kept=True))
    n1_grad = grad_in or train
    attn_names = ["qkv_proj"] if arch.family == "phi3" else ["q_proj", "k_proj", "v_proj"]
    saved, grads = _consumers(arch, num, plan, num.resid, h, n1_grad, attn_names)
    out.add(saved)
    if arch.qk_norm:
        out.add(_qk_norms(arch, num, grads, train))
    attn_grad = any(grads.values()) or plan.prefix > 0
    if attn_grad:
        out.token += _attention(arch, num, plan, tokens)
        if arch.family == "phi3" and train:
            out.token += num.attn * qd  # o_proj's contiguous copy of the attention output
    saved, grads = _consumers(arch, num, plan, num.attn, qd, attn_grad, ["o_proj"], u_already_kept=True)
    out.add(saved)
    o_grad = grads["o_proj"]
    if plan.adapter and plan.houlsby:
        out.token += _adapter(num, plan, h)
        o_grad = True
    if arch.family == "gemma2":
        out.add(norm_saved(arch, num, o_grad, train, out_kept=False))  # post-attention norm
    resid_grad = grad_in or o_grad
    out.add(norm_saved(arch, num, resid_grad, train, out_kept=True))
    mlp_grad = _mlp(arch, num, plan, resid_grad or train, out)
    if plan.adapter:
        out.token += _adapter(num, plan, h)
        mlp_grad = True
    if arch.family == "gemma2":
        out.add(norm_saved(arch, num, mlp_grad, train, out_kept=False))  # post-feedforward norm
    return out, resid_grad or mlp_grad


def _qk_norms(arch: Architecture, num: Numerics, grads: dict[str, bool], trainable: bool) -> Saved:
    """Qwen3's and Gemma 3's per-head RMSNorms on q and k: each keeps its fp32 input and one rsqrt per
    head where a gradient passes (the projection's output needs one), the normalised value when its
    weight trains (Gemma's (1 + w) multiply keeps it in fp32)."""
    saved = Saved()
    kept = FP32 if arch.model_type == "gemma3_text" else num.linear
    for name, width, heads in (("q_proj", arch.q_dim, arch.num_heads), ("k_proj", arch.kv_dim, arch.num_kv_heads)):
        if grads.get(name):
            saved.token += FP32 * (width + heads) + (kept * width if trainable else 0)
    return saved


def _mlp(arch: Architecture, num: Numerics, plan: LayerPlan, n2_grad: bool, out: Saved) -> bool:
    """Gated MLP, act(gate) · up then down: adds what it keeps to `out`; does its output need a gradient."""
    h, f = arch.hidden_size, arch.intermediate_size
    if arch.moe is not None:
        autocast = num.autocast or num.autocast_peft
        token, weight = moe_saved(arch.moe, h, num.resid, 2 if autocast else num.resid, n2_grad,
                                  plan.base_trainable, autocast)
        out.token += token
        out.weight += weight
        return n2_grad or plan.base_trainable
    if arch.family == "phi3":
        saved, grads = _consumers(arch, num, plan, num.resid, h, n2_grad, ["gate_up_proj"])
        out.add(saved)
        gate_grad = up_grad = grads["gate_up_proj"]
        if gate_grad:
            out.token += num.linear * 2 * f + num.linear * f  # the fused gate|up output (both halves kept), act
    else:
        saved, grads = _consumers(arch, num, plan, num.resid, h, n2_grad, ["gate_proj", "up_proj"])
        out.add(saved)
        gate_grad, up_grad = grads["gate_proj"], grads["up_proj"]
        out.token += num.linear * f if gate_grad else 0.0  # act(gate) keeps gate
        out.token += num.linear * f if up_grad else 0.0  # the product keeps act(gate)
        out.token += num.linear * f if gate_grad else 0.0  # ... and up
    prod_grad = gate_grad or up_grad
    saved, grads = _consumers(arch, num, plan, num.linear, f, prod_grad, ["down_proj"])
    out.add(saved)
    return grads["down_proj"]

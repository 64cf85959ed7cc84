"""Peak training memory in closed form: a maximum over the phases of one step (ESTIMATOR.md F0-F8).

Why phases: the tensors alive at the end of the forward pass (saved
activations, the logits), at the start of the backward (the loss gradient
over the whole vocabulary), at its end (every gradient) and inside
`optimizer.step()` (states plus foreach temporaries) are different sets;
the peak is the largest of them, never their sum. Optimiser states and (with
gradient accumulation) gradients exist through the whole step, because the
peak that matters is the second step's, not the first.

The loss follows the worker's (`worker.train.loss`, issue 13). It runs the
output layer over the target positions only (all but each row's first, in
the planner's worst case), CHUNK positions at a time, and makes the gradients
in the forward: at its worst one chunk's fp32 logits, the logsumexp and the
softmax computed in their storage (min(CHUNK, rows) × V × 4 bytes; in bf16 the chunk's
gradient cast and the weight gradient's fp32 copies on top), next to the
picked hidden states, the input gradient it fills (rows × h) and, when the
output layer trains, its fp32 weight gradient (V × h). Its autograd Function
keeps neither the head's input nor a cast of its weight. Prompt and prefix
tuning and soft-capped heads (Gemma-2) keep the full-logits term (F6). On
SmolLM2-135M LoRA (fp32, batch 2 × 256) the profiler-measured peak fell from
1330.3 to 1132.9 MB (1.96 float32 logits tensors); traced 1132.9 MB, this
closed form 1131.8 MB (-0.09 %). DoRA without dropout (peft's default)
rescales the base output instead of recomputing x·Wᵀ in fp32
(`activations._lora_input`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from app.planner.activations import FP32, IDS, MASK, LayerPlan, Numerics, Saved, layer_saved, norm_saved, numerics
from app.planner.loss_memory import LOSS_BWD, loss_rows, targets_only_loss, targets_only_loss_bytes
from app.planner.moe import moe_transient
from app.planner.architecture import Architecture
from app.planner.optimizer_memory import optimizer_memory
from app.planner.params import count_params, lora_targets, nf4_bytes_per_param, trainable_tensors
from app.planner.setup import TrainingSetup

# Backward temporaries of one decoder layer, per token, in units of (linear bytes × width): residual
# and projection gradients (h-wide) and the MLP's f-wide ones at their widest. Least-squares fits to
# traced steps of 4-layer models (h 256-768, f 688-2048); within ±20% of the traced transient, which
# is itself small next to activations and logits at real sizes. Under checkpointing the recomputed
# layer is counted separately, so fewer h-wide tensors remain.
BWD_H, BWD_F = 6.5, 1.7
BWD_H_GC, BWD_F_GC = 1.0, 2.6
BATCH_TENSORS = 3  # a batch's int64 tensors: input ids, attention mask, labels


@dataclass
class MemoryEstimate:
    """Tensor memory of one training step (no CUDA context or allocator slack: see `estimate`)."""

    peak: int
    phase: str
    breakdown: dict[str, int]
    phases: dict[str, int]
    paged: int
    trainable_params: int
    total_params: int
    notes: list[str] = field(default_factory=list)
    saved_activations: int = 0  # kept by the forward pass for the backward (the loss excluded)


def param_bytes(setup: TrainingSetup) -> int:
    return 2 if setup.precision == "bf16" else FP32


def layer_plans(arch: Architecture, setup: TrainingSetup) -> list[LayerPlan]:
    opts, L = setup.options_dict, arch.num_layers
    if setup.spec.trains_base:
        return [LayerPlan(base_trainable=True)] * L
    if setup.spec.trains_last_layers:
        k = int(opts["trainable_layers"])
        return [LayerPlan(base_trainable=i >= L - k) for i in range(L)]
    if setup.spec.lora:
        plan = LayerPlan(targets=lora_targets(arch, setup.lora_targets(arch)), r=int(opts["r"]),
                         dropout=float(opts["dropout"]) > 0, dora=setup.spec.magnitude)
        return [plan] * L
    if setup.spec.bottleneck:
        m = arch.hidden_size // int(opts["reduction_factor"])
        return [LayerPlan(adapter=m, houlsby=opts["config"] == "houlsby")] * L
    if setup.spec.virtual_tokens == "prefix":
        return [LayerPlan(prefix=setup.virtual_tokens)] * L
    return [LayerPlan()] * L


def embedding_trains(arch: Architecture, setup: TrainingSetup) -> bool:
    opts = setup.options_dict
    if setup.spec.trains_base:
        return True
    if setup.spec.trains_last_layers:
        return bool(opts["train_embeddings"] or (arch.tie_embeddings and opts["train_lm_head"]))
    return False


def head_trains(arch: Architecture, setup: TrainingSetup) -> bool:
    if setup.spec.trains_last_layers:
        opts = setup.options_dict
        return bool(opts["train_lm_head"] or (arch.tie_embeddings and opts["train_embeddings"]))
    return setup.spec.trains_base


def _weights(arch: Architecture, setup: TrainingSetup) -> tuple[int, int, int]:
    """(frozen weight bytes, trainable weight bytes, trainable bytes per param)."""
    counts = count_params(arch)
    pb = param_bytes(setup)
    trainable = trainable_tensors(arch, setup)
    n_t = sum(t.total for t in trainable)
    if setup.spec.quantized_base:
        nf4 = nf4_bytes_per_param(setup.options_dict["quant_type"], setup.options_dict["double_quant"])
        frozen = int(counts.linear * nf4) + FP32 * (counts.total - counts.linear)
        return frozen, FP32 * n_t, FP32
    t_bytes = FP32 if setup.spec.peft else pb
    if (setup.spec.trains_base or setup.spec.trains_last_layers):
        return pb * (counts.total - n_t), pb * n_t, pb
    return pb * counts.total, t_bytes * n_t, t_bytes


@dataclass
class _Forward:
    """Per-layer and whole-model bytes kept by the forward pass."""

    layer: list[float]  # everything each layer keeps without checkpointing
    kept: list[float]  # what it keeps in this run (its input only, under checkpointing)
    flows: list[bool]  # does a gradient pass through the layer
    head: float  # final norm, output layer input, rotary tables, the batch's tensors
    head_ids: float  # the batch's tensors alone (alive to the end of the step)
    grad_out: bool  # does a gradient reach the decoder's output (the loss then makes one for it)
    transient: list[float] = field(default_factory=list)  # what each layer's forward holds beyond `layer` (MoE)


def _forward(arch: Architecture, setup: TrainingSetup, num: Numerics, plans: list[LayerPlan], tokens: int) -> _Forward:
    s_eff = tokens // setup.batch_size
    grad = embedding_trains(arch, setup) or setup.spec.virtual_tokens == "prompt"
    layer, kept, flows, transient = [], [], [], []
    cache: dict[tuple[int, bool], tuple[Saved, bool]] = {}
    for plan in plans:
        key = (id(plan), grad)
        if key not in cache:
            cache[key] = layer_saved(arch, num, plan, grad, s_eff)
        saved, out_grad = cache[key]
        total = saved.token * tokens + saved.weight
        layer.append(total)
        flows.append(total > 0)
        # Checkpointing keeps a layer's input (for the recompute) instead of its activations; a layer
        # through which no gradient flows (below freeze's first trainable layer) keeps nothing either way.
        kept.append(num.resid * arch.hidden_size * tokens if setup.uses_checkpointing and total > 0 else total)
        transient.append(moe_transient(arch.moe, arch.hidden_size, num.resid, plan.base_trainable) * tokens
                         if arch.moe and total > 0 else 0.0)
        grad = grad or out_grad
    trains_head = head_trains(arch, setup)
    full_logits = not targets_only_loss(arch, setup)
    # The targets-only loss keeps neither the output layer's input nor a cast of its weight (its
    # autograd Function makes the gradients in the forward); the position mask is all it leaves.
    head = norm_saved(arch, num, grad, final_norm_trains(setup), out_kept=trains_head and full_logits).token * tokens
    if trains_head and full_logits:
        head += (2 if num.autocast else num.resid) * arch.hidden_size * tokens  # the output layer's input
    if (num.autocast or num.autocast_peft) and grad and full_logits:
        head += 2 * arch.vocab_size * arch.hidden_size  # the bf16 cast of the output weight
    if not full_logits:
        head += MASK * loss_rows(setup)  # the targets mask, kept by the picks' backward
    ids = BATCH_TENSORS * IDS * tokens  # input ids, attention mask, labels (worker.train.data.Batch)
    head += 2 * num.resid * arch.head_dim * tokens + ids  # rotary cos/sin, the batch
    return _Forward(layer=layer, kept=kept, flows=flows, head=head, head_ids=ids,
                    grad_out=grad or final_norm_trains(setup), transient=transient)


def estimate_memory(arch: Architecture, setup: TrainingSetup) -> MemoryEstimate:
    """The peak over the phases of one step, and what it is made of."""
    if setup.objective == "dpo":  # the policy's 2·b sequences, and the reference beside it (app/planner/dpo.py)
        from app.planner.dpo import pairs_setup, with_reference

        return with_reference(arch, setup, estimate_memory(arch, pairs_setup(setup)), numerics(setup).head,
                              param_bytes(setup))
    num = numerics(setup)
    plans = layer_plans(arch, setup)
    trainable = trainable_tensors(arch, setup)
    frozen_w, train_w, t_bytes = _weights(arch, setup)
    n_t = sum(t.total for t in trainable)
    grads = t_bytes * n_t
    galore = {t.name: int(setup.options_dict["rank"]) for t in trainable
              if t.name in setup.galore_targets(arch)}
    opt = optimizer_memory(setup.optimizer, trainable, t_bytes, galore)
    accumulating = setup.gradient_accumulation > 1  # gradients then live through the whole step

    b, s = setup.batch_size, setup.seq_len
    tokens = b * (s + setup.virtual_tokens if setup.spec.virtual_tokens == "prompt" else s)
    V, h = arch.vocab_size, arch.hidden_size
    fwd = _forward(arch, setup, num, plans, tokens)
    acts = sum(fwd.kept) + fwd.head

    if targets_only_loss(arch, setup):
        logits_fwd, logits_bwd = targets_only_loss_bytes(arch, setup, num, fwd.grad_out, head_trains(arch, setup),
                                                         param_bytes(setup))
    else:
        # Full logits: in the model's dtype, their fp32 copy and log-probs (F6); Gemma-2 keeps its softcap tanh.
        rows = b * (s - 1)
        softcap = num.head * V * tokens if arch.family == "gemma2" else 0
        upcast = FP32 * V * rows if num.head < FP32 or b > 1 else 0
        logits_fwd = num.head * V * tokens + upcast + FP32 * V * rows + softcap
        logits_bwd = LOSS_BWD * V * rows + softcap

    base = {"weights": frozen_w, "trainable_weights": train_w, "optimizer": opt.states,
            "gradients": grads if accumulating else 0}
    parts = {
        "forward": {**base, **_forward_peak(fwd, acts, logits_fwd)},
        "backward_start": {**base, "activations": acts, "logits": logits_bwd},
        "backward": {**base, **_backward(arch, setup, num, plans, fwd, t_bytes, accumulating, tokens)},
        "optimizer": {**base, "gradients": grads, "optimizer": opt.states + opt.step_temporaries,
                      "activations": 0, "logits": 0},
    }
    if setup.spec.magnitude:
        parts["forward_weights"] = {**base, "activations": acts + _dora_transient(arch, setup), "logits": 0}
    if embedding_trains(arch, setup):
        # The embedding's gradient arrives last. Tied to the output layer, it is added to the gradient the
        # output layer made at the start: old, new and their sum are alive at once. With accumulation the
        # existing gradient takes the new one in place.
        embed = t_bytes * V * h
        extra = 2 * embed if arch.tie_embeddings else (embed if accumulating else 0)
        parts["backward_end"] = {**base, "gradients": grads, "activations": extra + fwd.head_ids, "logits": 0}
    phases = {name: int(sum(part.values())) for name, part in parts.items()}
    name = max(phases, key=lambda k: phases[k])
    notes = []
    if opt.paged:
        notes.append(f"{opt.paged / 2**30:.2f} GiB of optimiser state in paged (managed) memory, not counted")
    return MemoryEstimate(peak=phases[name], phase=name, breakdown={k: int(v) for k, v in parts[name].items()},
                          phases=phases, paged=opt.paged, trainable_params=n_t,
                          total_params=count_params(arch).total, notes=notes, saved_activations=int(acts))


def _backward(arch: Architecture, setup: TrainingSetup, num: Numerics, plans: list[LayerPlan], fwd: _Forward,
              t_bytes: int, accumulating: bool, tokens: int) -> dict[str, float]:
    """The worst moment going down the layers: the activations of the layers below still kept, the
    gradients of those above made, the layer's own backward temporaries (and, under checkpointing,
    the layer recomputed in full)."""
    h, f, V = arch.hidden_size, arch.mlp_width, arch.vocab_size  # MoE: the k experts' rows per token
    gc = setup.uses_checkpointing
    transient = num.linear * ((BWD_H_GC if gc else BWD_H) * h + (BWD_F_GC if gc else BWD_F) * f) * tokens
    if setup.uses_checkpointing and float(setup.options_dict.get("dropout", 0.0)) > 0:
        # The recompute materialises DoRA's weights again (partly freed); without dropout the fp32 W
        # it keeps for the x·Wᵀ product is never made, and the rest is freed before the layer's backward.
        transient += _dora_transient(arch, setup) * 2 / 3
    layer_grads = [0.0] * len(plans) if accumulating else _layer_grad_bytes(arch, setup, t_bytes, plans)
    made = 0.0 if accumulating or not head_trains(arch, setup) else t_bytes * V * h
    below = sum(fwd.kept) + fwd.head
    worst = {"activations": 0.0, "gradients": 0.0}
    for i in reversed(range(len(plans))):
        if not fwd.flows[i]:
            break  # nothing below needs a gradient: the backward stops here
        if setup.uses_checkpointing:
            # The layer is recomputed in full before its gradients exist; by the time they do,
            # its recomputed activations are mostly freed.
            candidates = [(below + fwd.layer[i] + transient, made), (below + transient, made + layer_grads[i]),
                          (below + fwd.layer[i] + fwd.transient[i], made)]
        else:
            # Start of the layer: its activations all kept, none of its gradients made yet; end: the
            # reverse. (A layer's weight gradients only appear as its activations are consumed.)
            candidates = [(below + transient, made), (below - fwd.kept[i] + transient, made + layer_grads[i])]
        for acts, grads in candidates:
            if acts + grads > sum(worst.values()):
                worst = {"activations": acts, "gradients": grads}
        below -= fwd.kept[i]
        made += layer_grads[i]
    if accumulating:
        worst["gradients"] = t_bytes * sum(t.total for t in trainable_tensors(arch, setup))
    return {**worst, "logits": 0.0}


def _forward_peak(fwd: _Forward, acts: float, logits: float) -> dict[str, float]:
    """The forward's worst moment: the loss's logits over every kept activation, or the last layer's
    MoE block holding its locals (`moe_transient`) over the layers below."""
    last = sum(fwd.kept[:-1]) + fwd.layer[-1] + fwd.transient[-1]
    return {"activations": acts, "logits": logits} if last <= acts + logits else {"activations": last, "logits": 0.0}


def _dora_transient(arch: Architecture, setup: TrainingSetup) -> float:
    """DoRA's forward builds W + B·A in fp32 for its column norm (ESTIMATOR.md F4): ~3 fp32 copies of a weight."""
    if not setup.spec.magnitude:
        return 0.0
    return 3.0 * FP32 * max(d_in * d_out for d_in, d_out in lora_targets(arch, setup.lora_targets(arch)).values())


def final_norm_trains(setup: TrainingSetup) -> bool:
    return (setup.spec.trains_base or setup.spec.trains_last_layers)


def _layer_grad_bytes(arch: Architecture, setup: TrainingSetup, t_bytes: int, plans: list[LayerPlan]) -> list[float]:
    """Gradient bytes each decoder layer produces during the backward."""
    trainable = trainable_tensors(arch, setup)
    per_layer_total = sum(t.total for t in trainable if t.count % arch.num_layers == 0 and t.count >= arch.num_layers)
    if setup.spec.trains_last_layers:
        n_layer = sum(t.total for t in trainable if t.name not in {"final_norm", "embed_tokens", "lm_head"})
        k = sum(1 for plan in plans if plan.base_trainable)
        return [t_bytes * n_layer / k if plan.base_trainable else 0 for plan in plans]
    if setup.spec.virtual_tokens is not None:
        return [0.0] * len(plans)
    return [t_bytes * per_layer_total / arch.num_layers] * len(plans)

"""FLOPs of one optimiser step, and time and cost on a GPU (ESTIMATOR.md T1-T2).

Counted the way `torch.utils.flop_counter` counts the traced step (2·m·n·k
per matmul, attention as two dense s×s products, no causal halving), so the
instant and the traced figures agree. Why not "6N per token": what runs
depends on the method. A frozen weight needs no weight-gradient matmul, but
its input gradient is still computed wherever a gradient must pass below it;
below the lowest trainable tensor nothing runs backward at all; checkpointing
adds one forward of each layer; prompt tuning lengthens every sequence and
prefix tuning every attention. The output layer runs over the target
positions only (the worker's targets-only loss), over every position where
the loss still computes the full logits (prompt and prefix tuning,
soft-capped heads). Sequences are counted at seq_len: the planner's worst
micro-batch (grouped batches pad little, so a typical step is shorter).

Time = FLOPs / (dense bf16 peak × utilisation for the method on that GPU);
cost = time × price per hour. The utilisation factors live in the GPU
catalog, because they are measurements to calibrate, not facts of nature.
"""
from __future__ import annotations

from app.planner.architecture import Architecture
from app.planner.loss_memory import loss_rows, targets_only_loss
from app.planner.memory import embedding_trains, final_norm_trains, head_trains, layer_plans
from app.planner.activations import LayerPlan
from app.planner.moe import moe_flops
from app.planner.setup import TrainingSetup


def _stages(arch: Architecture) -> list[list[str]]:
    """A layer's Linear modules in the order their outputs feed each other (["moe"]: the MoE block)."""
    if arch.family == "phi3":
        return [["qkv_proj"], ["o_proj"], ["gate_up_proj"], ["down_proj"]]
    if arch.moe is not None:
        return [["q_proj", "k_proj", "v_proj"], ["o_proj"], [], ["moe"]]
    return [["q_proj", "k_proj", "v_proj"], ["o_proj"], ["gate_proj", "up_proj"], ["down_proj"]]


def _layer_flops(arch: Architecture, plan: LayerPlan, tokens: int, s_q: int, s_k: int, batch: int,
                 grad_in: bool) -> tuple[float, float, float, bool]:
    """(forward, backward, recomputed forward) FLOPs of one decoder layer; does its output need a gradient.

    The recomputation under checkpointing stops after the last tensor the backward
    needs: when that is down_proj's input, down_proj's own product is not run again
    (an MoE block keeps its `down` output for the routing product: recomputed in full).
    (torch recomputes some checkpointed layers whose input needs no gradient more
    than once, e.g. the first trainable layer of freeze or adapters; not modelled.)
    """
    modules = arch.linear_modules()
    fwd = bwd = last = 0.0
    flows = grad_in or plan.base_trainable  # a trainable norm makes the projections' inputs need a gradient
    adapter = 2.0 * tokens * 2 * arch.hidden_size * plan.adapter  # down and up projections
    for index, stage in enumerate(_stages(arch)):
        for name in stage:
            if name == "moe" and arch.moe is not None:
                moe_fwd, moe_bwd = moe_flops(arch.moe, arch.hidden_size, tokens, flows, plan.base_trainable)
                fwd, bwd = fwd + moe_fwd, bwd + moe_bwd
                continue
            d_in, d_out = modules[name]
            mm = 2.0 * tokens * d_in * d_out
            fwd += mm
            # (Gemma-2's post-feedforward norm keeps down_proj's output, so there it is recomputed.)
            if name == "down_proj" and name not in plan.targets and not plan.adapter and arch.family != "gemma2":
                last = mm  # nothing after it is kept, so the recomputation stops before it
            bwd += (mm if flows else 0.0) + (mm if plan.base_trainable else 0.0)  # input, weight gradients
            if name in plan.targets:
                fwd += 2.0 * tokens * plan.r * (d_in + d_out)
                # B: weight and input gradients; A: weight gradient, input gradient if one flows.
                bwd += 2.0 * tokens * plan.r * d_out * 2 + 2.0 * tokens * plan.r * d_in * (2 if flows else 1)
                if plan.dora:
                    # peft's DoRA materialises B·A for the column norm; with dropout it also runs x
                    # through the full weight again in fp32 (without, it rescales the base output).
                    fwd += 2.0 * d_out * plan.r * d_in + (mm if plan.dropout else 0.0)
                    bwd += mm if flows and plan.dropout else 0.0
        flows = flows or plan.base_trainable or any(n in plan.targets for n in stage)
        if index == 0:
            flows = flows or plan.prefix > 0
            attn = 4.0 * batch * arch.num_heads * s_q * s_k * arch.head_dim  # q·kᵀ and p·v
            fwd += attn
            bwd += 2.5 * attn if flows else 0.0  # flop_counter: scores recomputed, then four products
        if plan.adapter and (index == 3 or (index == 1 and plan.houlsby)):
            fwd += adapter
            bwd += adapter * (2 if flows else 1) + adapter / 2
            flows = True
    return fwd, bwd, fwd - last, flows


def flops_per_micro_batch(arch: Architecture, setup: TrainingSetup) -> float:
    """Forward + backward FLOPs of one micro-batch (recomputation included); for DPO the policy's over
    each pair's two sequences, and the reference's forward over them (app/planner/dpo.py)."""
    if setup.objective == "dpo":
        from app.planner.dpo import pairs_setup

        pairs = pairs_setup(setup)
        return flops_per_micro_batch(arch, pairs) + forward_flops(arch, pairs)
    b, s, p = setup.batch_size, setup.seq_len, setup.virtual_tokens
    s_q = s + p if setup.spec.virtual_tokens == "prompt" else s
    s_k = s_q + (p if setup.spec.virtual_tokens == "prefix" else 0)
    tokens = b * s_q
    grad = embedding_trains(arch, setup) or setup.spec.virtual_tokens == "prompt"
    total = 0.0
    for plan in layer_plans(arch, setup):
        fwd, bwd, again, out = _layer_flops(arch, plan, tokens, s_q, s_k, b, grad)
        total += fwd + bwd + (again if setup.uses_checkpointing and bwd > 0 else 0.0)
        grad = grad or out
    if targets_only_loss(arch, setup):
        # The worker's loss runs the output layer over the target positions only (all but each row's
        # first in the worst case), its input gradient wherever one reaches the decoder's output.
        head = 2.0 * loss_rows(setup) * arch.hidden_size * arch.vocab_size
        grad = grad or final_norm_trains(setup)
    else:
        head = 2.0 * tokens * arch.hidden_size * arch.vocab_size
    total += head + (head if grad else 0.0) + (head if head_trains(arch, setup) else 0.0)
    return total


def forward_flops(arch: Architecture, setup: TrainingSetup) -> float:
    """A forward pass alone (no gradient anywhere): every layer's forward products and the full output layer."""
    tokens = setup.batch_size * setup.seq_len
    layers = sum(_layer_flops(arch, plan, tokens, setup.seq_len, setup.seq_len, setup.batch_size, False)[0]
                 for plan in layer_plans(arch, setup))
    return layers + 2.0 * tokens * arch.hidden_size * arch.vocab_size


def flops_per_step(arch: Architecture, setup: TrainingSetup) -> float:
    return flops_per_micro_batch(arch, setup) * setup.gradient_accumulation


def seconds_for(flops: float, tflops: float, utilisation: float) -> float:
    """Wall time of `flops` at a dense bf16 peak of `tflops` TFLOP/s and the given utilisation (0-1)."""
    return flops / (tflops * 1e12 * utilisation)


def cost_for(seconds: float, price_per_hour: float) -> float:
    return seconds / 3600.0 * price_per_hour

"""GaLore (Zhao et al. 2024): full-parameter training, gradients projected to low rank.

Not an adapter: every weight trains and the artifact is a full model folder,
as for `full`. What changes is the optimiser. galore-torch's `GaLoreAdamW`
projects the gradient of each targeted 2-D weight onto its top `rank`
singular directions (recomputed by an SVD every `update_proj_gap` steps),
keeps Adam's moments in that small space, and projects the update back,
scaled by `scale`. Every other parameter (embeddings, norms, the head,
untargeted matrices) gets plain AdamW in the same optimiser.

Targets are module names as for LoRA (presets minimal, attention, all-linear,
or a list): the weight of every `nn.Linear` whose name ends in one of them.
We build `GaLoreAdamW` ourselves rather than through the Trainer's
`optim="galore_adamw"` because the loop is our own; the parameter groups are
the ones the Trainer builds.
"""
from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedModel

from app.methods.galore import GaloreOptions
from worker.methods.full import save  # noqa: F401 - the same model folder as `full`
from worker.methods.optimizers import galore_adamw
from worker.methods.targets import linear_names

OPTIMIZER_NAME = "galore_adamw"  # what the job log names (the Trainer's name for the same optimiser)


def build(model: PreTrainedModel, options: GaloreOptions) -> torch.nn.Module:
    """Every parameter trains; the low-rank part is the optimiser's."""
    target_weights(model, options)  # an unknown target fails here, before any step
    model.requires_grad_(True)
    return model


def target_weights(model: torch.nn.Module, options: GaloreOptions) -> list[torch.nn.Parameter]:
    """The 2-D weights whose gradients are projected, in model order."""
    targets = options.resolved_targets(linear_names(model))
    found: list[torch.nn.Parameter] = []
    matched: set[str] = set()
    for name, module in model.named_modules():
        suffix = name.rsplit(".", 1)[-1]
        hit = next((t for t in targets if name == t or name.endswith("." + t) or suffix == t), None)
        if hit is not None and isinstance(module, torch.nn.Linear):
            found.append(module.weight)
            matched.add(hit)
    missing = [t for t in targets if t not in matched]
    if missing:
        raise ValueError(
            f"GaLore target_modules {missing} match no linear layer of {type(model).__name__}; "
            "use a preset (minimal, attention, all-linear) or names of its linear layers"
        )
    return found


def own_optimizer(
    model: torch.nn.Module, options: GaloreOptions, learning_rate: float, weight_decay: float
) -> torch.optim.Optimizer:
    return galore_adamw(
        model,
        target_weights(model, options),
        rank=options.rank,
        update_proj_gap=options.update_proj_gap,
        scale=options.scale,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
    )


# Checkpoint hooks (worker.train.checkpoint). GaLoreAdamW keeps a `GaLoreProjector`
# object in each projected weight's optimiser state; checkpoints hold plain tensors and
# numbers only (they are loaded with `torch.load(weights_only=True)`), so the projectors
# travel beside the state_dict, under their parameter's index, and are rebuilt on load.
# (Not inside "state": `Optimizer.load_state_dict` would cast their strings as sequences.)
PROJECTOR_FIELDS = ("rank", "verbose", "update_proj_gap", "scale", "ortho_matrix", "proj_type")
PROJECTORS_KEY = "galore_projectors"


def optimizer_state_to_plain(state_dict: dict[str, Any]) -> dict[str, Any]:
    """A copy of the optimiser's state_dict with the projectors moved out as plain dicts."""
    state, projectors = {}, {}
    for index, values in state_dict["state"].items():
        values = dict(values)
        projector = values.pop("projector", None)
        if projector is not None:
            projectors[index] = {f: getattr(projector, f) for f in PROJECTOR_FIELDS}
        state[index] = values
    return {**state_dict, "state": state, PROJECTORS_KEY: projectors}


def optimizer_state_from_plain(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """Rebuild the projectors of a loaded state_dict (indices count params across groups, in order)."""
    from galore_torch.galore_projector import GaLoreProjector

    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, plain in saved.get(PROJECTORS_KEY, {}).items():
        projector = GaLoreProjector(
            plain["rank"], verbose=plain["verbose"], update_proj_gap=plain["update_proj_gap"],
            scale=plain["scale"], proj_type=plain["proj_type"],
        )
        matrix = plain["ortho_matrix"]
        param = params[int(index)]
        projector.ortho_matrix = matrix.to(param.device) if isinstance(matrix, torch.Tensor) else matrix
        optimizer.state[param]["projector"] = projector

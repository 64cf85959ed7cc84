"""GaLore (Zhao et al. 2024): every weight trains; the gradients of the targets are projected to low rank."""
from __future__ import annotations

from pydantic import Field

from app.methods.base import FULL_LR, MethodError, MethodSpec, TargetedOptions, TargetModules, targets_in
from app.planner.architecture import Architecture


class GaloreOptions(TargetedOptions):
    rank: int = Field(128, ge=1, le=8192, description="Rank of the gradient projection")
    update_proj_gap: int = Field(200, ge=1, le=100_000, description="Steps between projection updates (SVD)")
    scale: float = Field(0.25, gt=0, le=10, description="Scale of the projected update")
    target_modules: TargetModules = Field("all-linear", description="Which weight matrices get projected gradients")


def check(options: GaloreOptions, arch: Architecture) -> None:
    """A rank above the hidden size is above the rank of every projected gradient: refuse it."""
    targets_in(arch, options.resolved_targets(arch.linear_modules()))
    if options.rank > arch.hidden_size:
        raise MethodError("rank", f"rank {options.rank} is above the model's hidden size {arch.hidden_size}, the "
                                  f"largest rank its matrices' gradients have; use at most {arch.hidden_size}")


SPEC = MethodSpec(
    name="galore", label="GaLore", options=GaloreOptions, check=check,
    trains="every weight, with low-rank projected gradients", artifact="model", learning_rate=FULL_LR,
    # Its own GaLoreAdamW: AdamW whose states for the targets live in the projected space.
    trains_base=True, low_rank_gradients=True, optimizers=("adamw",), requires=("galore_torch",),
)

"""A job's `hyperparameters.precision` is what the trainer really runs, on the demo model.

Why: the planner prices bf16 weights, fp32 weights under bf16 autocast
(`mixed`) or fp32; a job launched from a plan must run that recipe, not the
worker's float32 whatever was asked. Checked in-process on the loop's own
`load_model` and `train_step` over one real step, where both the weights'
dtype and autocast (what the linears compute in) are visible.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers.trainer import write_spec

pytestmark = pytest.mark.integration

FULL = {"optimizer": "adamw"}
SHORT = {"max_steps": 2, "batch_size": 2, "seq_len": 96}


def _linear_output_dtypes(assets: tuple[Path, Path], tmp_path: Path, precision: str | None
                          ) -> tuple[set[torch.dtype], set[torch.dtype]]:
    """(dtypes of the weights, dtypes the decoder's linears computed in) over one real training step."""
    from worker.methods import step_autocast
    from worker.train.step import train_step
    from worker.train.prepare import load_data, load_model
    from worker.train.spec import load_spec

    model_dir, dataset = assets
    extra = {} if precision is None else {"precision": precision}
    spec = load_spec(write_spec(tmp_path / str(precision), model_dir, dataset, method="full", method_config=FULL,
                                **SHORT, **extra))
    device = torch.device("cpu")
    tokenizer, _method, model = load_model(spec, device)
    data = load_data(spec, tokenizer, model)
    seen: set[torch.dtype] = set()
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
             for m in model.modules() if isinstance(m, torch.nn.Linear)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    params = list(model.parameters())
    train_step(model, optimizer, iter(data.stream), 1, params, device, step_autocast(spec.config.hyperparameters))
    for hook in hooks:
        hook.remove()
    return {p.dtype for p in model.parameters()}, seen


def test_bf16_precision_trains_bf16_weights(assets: tuple[Path, Path], tmp_path: Path) -> None:
    weights, computed = _linear_output_dtypes(assets, tmp_path, "bf16")
    assert (weights, computed) == ({torch.bfloat16}, {torch.bfloat16})


def test_mixed_precision_computes_in_bf16_over_float32_weights(assets: tuple[Path, Path], tmp_path: Path) -> None:
    weights, computed = _linear_output_dtypes(assets, tmp_path, "mixed")
    assert (weights, computed) == ({torch.float32}, {torch.bfloat16})


def test_unset_precision_stays_float32_throughout(assets: tuple[Path, Path], tmp_path: Path) -> None:
    weights, computed = _linear_output_dtypes(assets, tmp_path, None)
    assert (weights, computed) == ({torch.float32}, {torch.float32})

"""Every fine-tuning method trained once per session on the demo model, shared by the modules that check it.

test_trainer_methods checks the runs; test_merge and test_generate_cli check
the same runs' merged folders and downloads rather than training their own.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.assets import shared_assets
from tests.helpers.trainer import Run, run_trainer, write_spec

STEPS = 12
BATCH_SIZE = 4
SEQ_LEN = 96
# Max |difference| between the probe's next-token logits as the training process
# reported them and as the download gives them in a fresh process. Float32 on the
# same CPU gives bit-identical logits today (|logits| < 5 here), QLoRA's 4-bit
# base included (same quantisation, same bitsandbytes kernel); the margin allows
# a different kernel path, while a wrong or partial download is off by far more.
PROBE_TOLERANCE = 1e-4

LORA_OPTIONS = {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": "attention", "use_rslora": False}
QLORA_OPTIONS = {
    **LORA_OPTIONS, "quant_type": "nf4", "double_quant": True, "compute_dtype": "float32",
    "optimizer": "paged_adamw_8bit",
}
# update_proj_gap > STEPS: one projection (an SVD at the first step) serves the whole run,
# so every update of a targeted weight lies in one rank-GALORE_RANK subspace.
GALORE_RANK = 16
GALORE_OPTIONS = {"rank": GALORE_RANK, "update_proj_gap": 200, "scale": 0.25, "target_modules": "all-linear"}


@dataclass(frozen=True)
class Case:
    method_config: dict[str, Any]
    learning_rate: float  # chosen per method so that 12 steps lower the loss clearly
    # "model": save_pretrained folder · "peft": PEFT folder · "qlora": PEFT folder for a 4-bit base ·
    # "bottleneck": our bottleneck-adapter folder
    artifact: str
    method: str = ""  # the trainer's method when the case id is not one (two adapter configs)


CASES: dict[str, Case] = {
    "full": Case({"optimizer": "adamw"}, 1e-3, "model"),
    "freeze": Case(
        {"trainable_layers": 2, "train_lm_head": True, "train_embeddings": False, "optimizer": "adamw"}, 1e-3, "model"
    ),
    "lora": Case(LORA_OPTIONS, 1e-3, "peft"),
    "dora": Case(LORA_OPTIONS, 1e-3, "peft"),
    "qlora": Case(QLORA_OPTIONS, 1e-3, "qlora"),
    "galore": Case(GALORE_OPTIONS, 1e-3, "model"),
    # Some 34-68 thousand adapter weights starting at the identity: a larger step.
    "adapters-houlsby": Case(
        {"config": "houlsby", "reduction_factor": 16, "non_linearity": "relu"}, 1e-2, "bottleneck", "adapters"
    ),
    "adapters-pfeiffer": Case(
        {"config": "pfeiffer", "reduction_factor": 16, "non_linearity": "relu"}, 1e-2, "bottleneck", "adapters"
    ),
    # A few thousand parameters move the loss only with a large step.
    "prefix": Case({"num_virtual_tokens": 20}, 3e-2, "peft"),
    "prompt": Case(
        {"num_virtual_tokens": 20, "init": "text", "init_text": "Convert the input to uppercase."}, 1e-2, "peft"
    ),
}


@dataclass
class MethodRun:
    method: str
    case: Case
    run: Run
    artifact: Path
    merged: Path  # the spec's merged_dir; only LoRA, DoRA and QLoRA write it

    def summary(self) -> dict[str, Any]:
        (summary,) = self.run.of("summary")
        return summary


_TRAINED: dict[str, MethodRun] = {}


def trained(case_id: str, tmp_path_factory: pytest.TempPathFactory) -> MethodRun:
    """Train CASES[case_id] once per session (with a merged_dir), whichever test module asks first.

    The per-method runs are the slow part of these tests; test_merge and
    test_generate_cli check the same runs' merged folders and downloads
    rather than training their own.
    """
    if case_id not in _TRAINED:
        case = CASES[case_id]
        method = case.method or case_id
        model, dataset = shared_assets(tmp_path_factory)
        job_dir = tmp_path_factory.getbasetemp() / "method-runs" / case_id
        spec = write_method_spec(
            job_dir, model, dataset, method, case.method_config, learning_rate=case.learning_rate,
            merged_dir=job_dir / "merged",
        )
        run = run_trainer(spec)
        assert_succeeded(run)
        _TRAINED[case_id] = MethodRun(method, case, run, job_dir / "artifact", job_dir / "merged")
    return _TRAINED[case_id]


def write_method_spec(
    job_dir: Path, model: Path, dataset: Path, method: str, method_config: dict[str, Any],
    merged_dir: Path | None = None, **hyperparameters: Any
) -> Path:
    return write_spec(job_dir, model, dataset, method=method, method_config=method_config, merged_dir=merged_dir,
                      **{"max_steps": STEPS, "batch_size": BATCH_SIZE, "seq_len": SEQ_LEN, **hyperparameters})


def assert_succeeded(run: Run) -> None:
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

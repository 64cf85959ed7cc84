"""Every fine-tuning method the trainer has, run for real on the demo model and dataset.

Each method trains a few steps in the trainer subprocess; then its download
is loaded by the standard library (transformers for model folders, peft for
PEFT folders, our public loader `worker.bottleneck.from_pretrained` for
bottleneck adapters) in a fresh Python process, and must give the next-token
logits of the probe prompt that the training process reported at its end.

QLoRA's adapter is loaded the way it was trained: onto the base quantised to
4 bits with the job's `BitsAndBytesConfig` (then `PeftModel.from_pretrained`).
On the float32 base it gives other logits (the base's quantisation error,
about 0.6 on the demo); that path is the merged model's, see test_merge.py.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

from tests.artifact_probe import probe_in_fresh_process
from tests.conftest import shared_assets
from tests.test_trainer import Run, run_trainer
from worker.train.loop import PROBE_PROMPT

STEPS = 12
BATCH_SIZE = 4
SEQ_LEN = 96
# Max |difference| between the probe's next-token logits as the training process
# reported them and as the download gives them in a fresh process. Float32 on the
# same CPU gives bit-identical logits today (|logits| < 5 here), QLoRA's 4-bit
# base included (same quantisation, same bitsandbytes kernel); the margin allows
# a different kernel path, while a wrong or partial download is off by far more.
PROBE_TOLERANCE = 1e-4
# One step's loss depends on its batch, so compare the mean of the first and last three steps.
LOSS_WINDOW = 3
MIN_LOSS_DROP = 0.3  # nats; every method drops by more than 0.8 on the demo in 12 steps

LORA_OPTIONS = {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": "attention", "use_rslora": False}
QLORA_OPTIONS = {
    **LORA_OPTIONS, "quant_type": "nf4", "double_quant": True, "compute_dtype": "float32",
    "optimizer": "paged_adamw_8bit",
}
# update_proj_gap > STEPS: one projection (an SVD at the first step) serves the whole run,
# so every update of a targeted weight lies in one rank-GALORE_RANK subspace.
GALORE_RANK = 16
RANK_RTOL = 1e-4
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
    job_dir.mkdir(parents=True, exist_ok=True)
    hp: dict[str, Any] = {
        "max_steps": STEPS, "epochs": None, "learning_rate": 1e-3, "batch_size": BATCH_SIZE, "seq_len": SEQ_LEN,
        "gradient_accumulation": 1, "warmup_steps": 0, "weight_decay": 0.0, "seed": 42, "log_every": 1,
        "gradient_checkpointing": False,
    }
    hp.update(hyperparameters)
    spec = {
        "job_id": job_dir.name,
        "model_path": str(model),
        "dataset_path": str(dataset),
        "output_dir": str(job_dir / "artifact"),
        "merged_dir": str(merged_dir) if merged_dir is not None else None,
        "config": {
            "model": "demo", "dataset": "demo", "method": method, "hyperparameters": hp,
            "method_config": method_config,
        },
    }
    path = job_dir / "spec.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    return path


def assert_succeeded(run: Run) -> None:
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


@pytest.fixture(scope="module", params=list(CASES))
def method_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> MethodRun:
    return trained(request.param, tmp_path_factory)


@pytest.mark.integration
def test_loss_goes_down(method_run: MethodRun) -> None:
    losses = [m["loss"] for m in method_run.run.of("metric")]
    assert len(losses) == STEPS
    first = sum(losses[:LOSS_WINDOW]) / LOSS_WINDOW
    last = sum(losses[-LOSS_WINDOW:]) / LOSS_WINDOW
    assert last < first - MIN_LOSS_DROP, losses
    assert method_run.summary()["final_loss"] == losses[-1]


def _safetensors_shapes(path: Path) -> dict[str, list[int]]:
    with safe_open(path, framework="pt") as weights:
        return {name: weights.get_slice(name).get_shape() for name in weights.keys()}


def _changed_tensors(base: Path, tuned: Path) -> dict[str, int]:
    """Name -> element count of every tensor that differs between two model.safetensors files."""
    changed: dict[str, int] = {}
    with safe_open(base, framework="pt") as before, safe_open(tuned, framework="pt") as after:
        assert set(before.keys()) == set(after.keys())
        for name in before.keys():
            if not torch.equal(before.get_tensor(name), after.get_tensor(name)):
                changed[name] = after.get_tensor(name).numel()
    return changed


@pytest.mark.integration
def test_trainable_params_are_what_the_artifact_holds(method_run: MethodRun, assets: tuple[Path, Path]) -> None:
    """The reported count is a requires_grad count; recount it from the download."""
    summary = method_run.summary()
    trainable = summary["trainable_params"]
    assert summary["trainable_percent"] == pytest.approx(100 * trainable / summary["total_params"])
    if method_run.case.artifact in ("peft", "qlora", "bottleneck"):
        # An adapter folder holds exactly the trained tensors (LoRA A/B, DoRA magnitudes, prefixes,
        # prompts, bottleneck down/up projections).
        shapes = _safetensors_shapes(method_run.artifact / "adapter_model.safetensors")
        assert trainable == sum(math.prod(shape) for shape in shapes.values())
        assert trainable < summary["total_params"] / 10
        if method_run.case.artifact == "qlora":
            # r=8 on q,k,v,o of 4 layers: r·(d_in + d_out) per target; k/v project 256 -> 128 (GQA).
            assert trainable == 4 * 8 * ((256 + 256) + (256 + 128) + (256 + 128) + (256 + 256))
            # The total counts the 4-bit weights as the weights they stand for, not as packed bytes.
            assert summary["total_params"] == _demo_parameter_count(assets[0]) + trainable
        if method_run.case.artifact == "bottleneck":
            h, m = 256, 256 // 16
            per_layer = 2 if method_run.case.method_config["config"] == "houlsby" else 1
            assert trainable == 4 * per_layer * (2 * h * m + h + m)
        return
    # A model folder: exactly the trainable tensors moved, every other one is bit-identical to the base.
    changed = _changed_tensors(assets[0] / "model.safetensors", method_run.artifact / "model.safetensors")
    assert trainable == sum(changed.values())
    if method_run.method in ("full", "galore"):
        assert trainable == summary["total_params"]
        if method_run.method == "galore":
            _assert_galore_updates_are_low_rank(method_run, assets[0])
    else:  # freeze: the last 2 of 4 decoder layers, the final norm and the head
        assert {name.split(".")[2] for name in changed if name.startswith("model.layers.")} == {"2", "3"}
        assert {name for name in changed if not name.startswith("model.layers.")} == {
            "model.norm.weight", "lm_head.weight"
        }


def _demo_parameter_count(model_dir: Path) -> int:
    shapes = _safetensors_shapes(model_dir / "model.safetensors")
    return sum(math.prod(shape) for shape in shapes.values())


def _assert_galore_updates_are_low_rank(method_run: MethodRun, base: Path) -> None:
    """GaLore really projected: a targeted weight moved by a rank-`rank` matrix, the head by a full-rank one."""
    assert any(log["message"] == "Optimizer: galore_adamw" for log in method_run.run.of("log"))
    with safe_open(base / "model.safetensors", framework="pt") as before, safe_open(
        method_run.artifact / "model.safetensors", framework="pt"
    ) as after:
        def delta(name: str) -> torch.Tensor:
            return after.get_tensor(name).double() - before.get_tensor(name).double()

        # Singular values below RANK_RTOL·σ_max are float32 rounding of the saved weights (~4e-6·σ_max
        # here), not update directions; the smallest kept direction is ~0.2·σ_max.
        def rank(update: torch.Tensor) -> int:
            return int(torch.linalg.matrix_rank(update, rtol=RANK_RTOL).item())

        for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.3.mlp.down_proj.weight"):
            update = delta(name)
            assert update.abs().max() > 0
            assert rank(update) == GALORE_RANK, name
        assert rank(delta("lm_head.weight")) > GALORE_RANK  # not targeted: plain AdamW


@pytest.mark.integration
def test_download_loads_in_a_fresh_process_with_the_trained_logits(
    method_run: MethodRun, assets: tuple[Path, Path]
) -> None:
    probe = method_run.summary()["probe"]
    assert probe["prompt"] == PROBE_PROMPT
    reported = probe["next_token_logits"]
    assert len(reported) == 259  # the demo tokenizer's vocabulary: 256 bytes + 3 specials
    if method_run.case.artifact != "model":
        config = json.loads((method_run.artifact / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == str(assets[0])
        # generate tells the two adapter kinds apart by these keys.
        assert ("peft_type" in config) is (method_run.case.artifact != "bottleneck")
    loaded = probe_in_fresh_process(
        method_run.case.artifact, method_run.artifact, PROBE_PROMPT, method_run.case.method_config
    )
    assert len(loaded) == len(reported)
    assert max(abs(a - b) for a, b in zip(loaded, reported)) < PROBE_TOLERANCE


@pytest.mark.integration
@pytest.mark.parametrize("optimizer", ["adamw_8bit", "adafactor", "sgd"])
def test_full_trains_with_each_optimizer(optimizer: str, assets: tuple[Path, Path], tmp_path: Path) -> None:
    spec = write_method_spec(tmp_path / "job", *assets, "full", {"optimizer": optimizer}, max_steps=4)
    run = run_trainer(spec)
    assert_succeeded(run)
    assert any(log["message"] == f"Optimizer: {optimizer}" for log in run.of("log"))
    losses = [m["loss"] for m in run.of("metric")]
    assert len(losses) == 4 and all(math.isfinite(loss) for loss in losses)
    # Every optimiser moved the weights: the loss after the first updates is not the starting one.
    assert losses[-1] != losses[0]
    assert (spec.parent / "artifact" / "model.safetensors").is_file()


# In-process checks of what a method builds, on a tiny model (no training).

def _tiny_llama(tie: bool) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=64, tie_word_embeddings=tie,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


def _trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize(
    ("lm_head", "embeddings", "shared_trains"),
    [(False, False, False), (True, False, True), (False, True, True), (True, True, True)],
)
def test_freeze_with_tied_embeddings_trains_the_shared_tensor_if_either_is_asked(
    lm_head: bool, embeddings: bool, shared_trains: bool
) -> None:
    from worker.methods import freeze

    model = freeze.build(
        _tiny_llama(tie=True),
        {"trainable_layers": 1, "train_lm_head": lm_head, "train_embeddings": embeddings, "optimizer": "adamw"},
    )
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert model.lm_head.weight.requires_grad is shared_trains
    last_layer_and_norm = sum(p.numel() for p in model.model.layers[-1].parameters()) + model.model.norm.weight.numel()
    shared = model.lm_head.weight.numel() if shared_trains else 0
    assert _trainable(model) == last_layer_and_norm + shared  # the shared tensor counts once
    assert not any(p.requires_grad for p in model.model.layers[0].parameters())


def test_freeze_refuses_more_layers_than_the_model_has() -> None:
    from worker.methods import freeze

    options = {"trainable_layers": 4, "train_lm_head": True, "train_embeddings": False, "optimizer": "adamw"}
    with pytest.raises(ValueError, match="only 3 decoder layers"):
        freeze.build(_tiny_llama(tie=False), options)


def test_prefix_tuning_refuses_gradient_checkpointing() -> None:
    from worker.methods import prefix

    model = _tiny_llama(tie=False)
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    with pytest.raises(ValueError, match="prefix tuning does not work with gradient checkpointing"):
        prefix.build(model, {"num_virtual_tokens": 4})


def test_prompt_tuning_prepends_positions_and_prefix_tuning_does_not() -> None:
    """Why the loop drops the first logits for prompt tuning only (see summed_loss)."""
    from worker.methods import prefix, prompt

    input_ids = torch.tensor([[1, 2, 3, 4, 5]])
    prompt_model = prompt.build(_tiny_llama(tie=False), {"num_virtual_tokens": 4, "init": "random", "init_text": None})
    prefix_model = prefix.build(_tiny_llama(tie=False), {"num_virtual_tokens": 4})
    with torch.no_grad():
        assert prompt_model(input_ids=input_ids).logits.shape[1] == 5 + 4
        assert prefix_model(input_ids=input_ids).logits.shape[1] == 5


def test_qlora_refuses_a_full_precision_base() -> None:
    from worker.methods import qlora

    with pytest.raises(ValueError, match="base loaded in 4 bits"):
        qlora.build(_tiny_llama(tie=False), QLORA_OPTIONS)


def test_galore_groups_project_exactly_the_target_weights() -> None:
    from worker.methods import galore

    model = galore.build(_tiny_llama(tie=False), {**GALORE_OPTIONS, "target_modules": "minimal"})
    optimizer = galore.make_optimizer(model, {**GALORE_OPTIONS, "target_modules": "minimal"}, 1e-3, 0.01)
    projected = [g for g in optimizer.param_groups if "rank" in g]
    assert len(projected) == 1
    group = projected[0]
    assert (group["rank"], group["update_proj_gap"], group["scale"], group["proj_type"]) == (
        GALORE_RANK, 200, 0.25, "std"
    )
    expected = {id(layer.self_attn.q_proj.weight) for layer in model.model.layers} | {
        id(layer.self_attn.v_proj.weight) for layer in model.model.layers
    }
    assert {id(p) for p in group["params"]} == expected
    # Every trainable parameter is in exactly one group; 1-D ones without weight decay.
    grouped = [p for g in optimizer.param_groups for p in g["params"]]
    assert len(grouped) == len({id(p) for p in grouped}) == len(list(model.parameters()))
    assert all(g["weight_decay"] == 0.0 for g in optimizer.param_groups if g["params"][0].dim() < 2)


def test_galore_refuses_targets_that_match_nothing() -> None:
    from worker.methods import galore

    with pytest.raises(ValueError, match=r"\['w_in'\] match no linear layer"):
        galore.build(_tiny_llama(tie=False), {**GALORE_OPTIONS, "target_modules": ["q_proj", "w_in"]})

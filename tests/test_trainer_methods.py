"""Every fine-tuning method the trainer has, run for real on the demo model and dataset.

Each method trains a few steps in the trainer subprocess; then its download
is loaded by the standard library (transformers for model folders, peft for
PEFT folders) in a fresh Python process, and must give the next-token logits
of the probe prompt that the training process reported at its end.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

from app.demo_dataset import write_demo_dataset
from tests.test_trainer import REPO_ROOT, Run, run_trainer
from worker.demo_model import ensure_demo_model
from worker.train.loop import PROBE_PROMPT

STEPS = 12
BATCH_SIZE = 4
SEQ_LEN = 96
# Max |difference| between the probe's next-token logits as the training process
# reported them and as the download gives them in a fresh process. Float32 on the
# same CPU gives bit-identical logits today (|logits| < 5 here); the margin allows
# a different kernel path, while a wrong or partial download is off by far more.
PROBE_TOLERANCE = 1e-4
# One step's loss depends on its batch, so compare the mean of the first and last three steps.
LOSS_WINDOW = 3
MIN_LOSS_DROP = 0.3  # nats; every method drops by more than 0.8 on the demo in 12 steps

LORA_OPTIONS = {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": "attention", "use_rslora": False}


@dataclass(frozen=True)
class Case:
    method_config: dict[str, Any]
    learning_rate: float  # chosen per method so that 12 steps lower the loss clearly
    artifact: str  # "model": save_pretrained folder · "peft": PEFT folder


CASES: dict[str, Case] = {
    "full": Case({"optimizer": "adamw"}, 1e-3, "model"),
    "freeze": Case(
        {"trainable_layers": 2, "train_lm_head": True, "train_embeddings": False, "optimizer": "adamw"}, 1e-3, "model"
    ),
    "lora": Case(LORA_OPTIONS, 1e-3, "peft"),
    "dora": Case(LORA_OPTIONS, 1e-3, "peft"),
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

    def summary(self) -> dict[str, Any]:
        (summary,) = self.run.of("summary")
        return summary


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("assets")
    dataset = root / "demo.jsonl"
    write_demo_dataset(dataset)
    return ensure_demo_model(root / "models"), dataset


def write_method_spec(
    job_dir: Path, model: Path, dataset: Path, method: str, method_config: dict[str, Any], **hyperparameters: Any
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
def method_run(
    request: pytest.FixtureRequest, assets: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> MethodRun:
    method: str = request.param
    case = CASES[method]
    spec = write_method_spec(
        tmp_path_factory.mktemp("jobs") / method, *assets, method, case.method_config,
        learning_rate=case.learning_rate,
    )
    run = run_trainer(spec)
    assert_succeeded(run)
    return MethodRun(method, case, run, spec.parent / "artifact")


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
    if method_run.case.artifact == "peft":
        # A PEFT folder holds exactly the trained tensors (LoRA A/B, DoRA magnitudes, prefixes, prompts).
        shapes = _safetensors_shapes(method_run.artifact / "adapter_model.safetensors")
        assert trainable == sum(math.prod(shape) for shape in shapes.values())
        assert trainable < summary["total_params"] / 10
        return
    # A model folder: exactly the trainable tensors moved, every other one is bit-identical to the base.
    changed = _changed_tensors(assets[0] / "model.safetensors", method_run.artifact / "model.safetensors")
    assert trainable == sum(changed.values())
    if method_run.method == "full":
        assert trainable == summary["total_params"]
    else:  # freeze: the last 2 of 4 decoder layers, the final norm and the head
        assert {name.split(".")[2] for name in changed if name.startswith("model.layers.")} == {"2", "3"}
        assert {name for name in changed if not name.startswith("model.layers.")} == {
            "model.norm.weight", "lm_head.weight"
        }


PROBE_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    from pathlib import Path
    from transformers import AutoModelForCausalLM, AutoTokenizer
    kind, artifact, prompt = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    tokenizer = AutoTokenizer.from_pretrained(artifact)
    if kind == "model":
        model = AutoModelForCausalLM.from_pretrained(artifact, dtype=torch.float32)
    else:
        from peft import PeftModel
        base = json.loads((artifact / "adapter_config.json").read_text())["base_model_name_or_path"]
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), artifact)
    model.eval()
    with torch.no_grad():
        logits = model(**tokenizer(prompt, return_tensors="pt")).logits
    print(json.dumps(logits[0, -1].tolist()))
    """
)


@pytest.mark.integration
def test_download_loads_in_a_fresh_process_with_the_trained_logits(
    method_run: MethodRun, assets: tuple[Path, Path]
) -> None:
    probe = method_run.summary()["probe"]
    assert probe["prompt"] == PROBE_PROMPT
    reported = probe["next_token_logits"]
    assert len(reported) == 259  # the demo tokenizer's vocabulary: 256 bytes + 3 specials
    if method_run.case.artifact == "peft":
        config = json.loads((method_run.artifact / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == str(assets[0])
    proc = subprocess.run(
        [sys.executable, "-c", PROBE_SCRIPT, method_run.case.artifact, str(method_run.artifact), PROBE_PROMPT],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
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

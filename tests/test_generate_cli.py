"""`tunedeck generate` loads every download a job offers (issue 3, acceptance 4).

The runs are test_trainer_methods' (trained once per session on the demo model).
The CLI is run for real on a LoRA folder, a full model folder and a bottleneck
folder; in-process, `load_artifact` (what the CLI uses) must give every
method's download the next-token logits the training process reported.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from tests.helpers.method_runs import CASES, PROBE_TOLERANCE, MethodRun, trained
from tests.helpers.trainer import REPO_ROOT
from worker.generate import ArtifactError, generate_text, load_artifact
from worker.train.loop import PROBE_PROMPT

pytestmark = pytest.mark.integration

MAX_NEW_TOKENS = 5


def _cli_generate(artifact: Path, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TUNEDECK_DATA_DIR": str(data_dir), "PYTHONIOENCODING": "utf-8"}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "generate", "--adapter", str(artifact), "--prompt", PROBE_PROMPT,
         "--max-new-tokens", str(MAX_NEW_TOKENS)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, encoding="utf-8", timeout=300,
    )


# One real `tunedeck generate` process per kind of download (PEFT folder, PEFT on a 4-bit base,
# model folder, bottleneck folder); every method's download goes through the same `load_artifact`
# in-process below, logits checked.
@pytest.mark.parametrize("case_id", ["lora", "qlora", "full", "adapters-houlsby"])
def test_cli_generate_prints_the_continuation(
    case_id: str, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    run = trained(case_id, tmp_path_factory)
    proc = _cli_generate(run.artifact, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # What it printed is the greedy continuation of the loaded model (deterministic on the CPU).
    expected = generate_text(str(run.artifact), None, PROBE_PROMPT, MAX_NEW_TOKENS)
    assert proc.stdout == expected + "\n"
    if not expected.strip():
        assert "produced no text" in proc.stderr


def _probe(model: torch.nn.Module, tokenizer_dir: Path | str) -> torch.Tensor:
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    with torch.no_grad():
        return model(**tokenizer(PROBE_PROMPT, return_tensors="pt")).logits[0, -1]


def _reported(run: MethodRun) -> torch.Tensor:
    probe = run.summary()["probe"]
    assert probe["prompt"] == PROBE_PROMPT
    return torch.tensor(probe["next_token_logits"])


@pytest.mark.parametrize("case_id", list(CASES))
def test_generate_loads_each_download_with_the_trained_logits(
    case_id: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Every method's download, as `tunedeck generate` loads it, continues from the trained model.

    QLoRA included: generate puts the adapter on the base quantised as the job
    recorded in tunedeck_training.json, which is the model the probe came from.
    """
    run = trained(case_id, tmp_path_factory)
    model, tokenizer_dir = load_artifact(run.artifact)
    assert not model.training
    assert (_probe(model, tokenizer_dir) - _reported(run)).abs().max() < PROBE_TOLERANCE


@pytest.mark.parametrize("case_id", ["lora", "dora", "qlora"])
def test_generate_loads_a_merged_folder_with_the_trained_logits(
    case_id: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A merged folder is a plain model folder that reproduces the trained logits (test_merge's
    tolerance); QLoRA's is merged into its dequantised 4-bit base, so it needs no bitsandbytes."""
    run = trained(case_id, tmp_path_factory)
    model, tokenizer_dir = load_artifact(run.merged)
    assert (_probe(model, tokenizer_dir) - _reported(run)).abs().max() < 1e-4


def test_qlora_onto_the_float32_base_is_off_by_the_quantisation_error(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """`quantize=False` (or no bitsandbytes) puts a QLoRA adapter on the float32 base: not the trained model."""
    run = trained("qlora", tmp_path_factory)
    on_float32, tokenizer_dir = load_artifact(run.artifact, quantize=False)
    assert (_probe(on_float32, tokenizer_dir) - _reported(run)).abs().max() > 1e-2


def test_a_bottleneck_folder_goes_to_our_loader_never_to_peft(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    import peft

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("PeftModel.from_pretrained called on a bottleneck folder")

    monkeypatch.setattr(peft.PeftModel, "from_pretrained", refuse)
    run = trained("adapters-houlsby", tmp_path_factory)
    config = json.loads((run.artifact / "adapter_config.json").read_text())
    assert config["adapter_type"] == "bottleneck" and "peft_type" not in config
    model, tokenizer_dir = load_artifact(run.artifact)
    assert model.bottleneck_adapters.config.config == "houlsby"
    assert (_probe(model, tokenizer_dir) - _reported(run)).abs().max() < PROBE_TOLERANCE


def test_generate_takes_a_zip_as_downloaded_or_zipped_by_hand(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    run = trained("adapters-pfeiffer", tmp_path_factory)
    expected = generate_text(str(run.artifact), None, PROBE_PROMPT, MAX_NEW_TOKENS)
    flat = Path(shutil.make_archive(str(tmp_path / "flat"), "zip", run.artifact))  # files at the root, as the API
    nested = Path(shutil.make_archive(str(tmp_path / "nested"), "zip", run.artifact.parent, run.artifact.name))
    for archive in (flat, nested):
        assert zipfile.is_zipfile(archive)
        assert generate_text(str(archive), None, PROBE_PROMPT, MAX_NEW_TOKENS) == expected


def test_an_unknown_adapter_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "x", "kind": "?"}))
    with pytest.raises(ArtifactError, match="unknown adapter type"):
        load_artifact(tmp_path)

"""Issue 3, acceptance 2: the merged model of a LoRA, DoRA and QLoRA job gives base + adapter's logits.

The trainer writes the merged folder (worker.merge) after the adapter when the
spec has a merged_dir; the runs are test_trainer_methods' (trained once per
session). The merged folder is loaded with plain transformers, no peft, and
compared with the float32 base + the PEFT adapter (`PeftModel.from_pretrained`).

For QLoRA that reference is the base quantised as in training (the job's
4-bit settings) + adapter: the model the job trained. The merge folds the
adapter into that base dequantised (worker/merge.py), so the merged folder
gives the training-time logits; a merge into the original float32 weights
would be off by the base's NF4 quantisation error (about 0.6 in the logits
on the random-init demo model), which the tolerance below would catch.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.helpers.method_runs import MethodRun, trained
from worker.train.loop import PROBE_PROMPT

pytestmark = [
    pytest.mark.integration,
    # peft 0.21 reads transformers' deprecated `is_gradient_checkpointing` when loading an adapter.
    pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning"),
]

# Max |difference| of logits (every position of two prompts, |logits| < 6 here) between
# the merged model and base + adapter. Merging changes only the order of float32 sums
# (W·x + B·(A·x)·s  vs  (W + s·B·A)·x): measured up to ~3e-6; DoRA's folded norm
# rescaling is of the same order. A missing or wrong merge is off by 1e-2 or more.
MERGE_TOLERANCE = 1e-4
PROMPTS = [PROBE_PROMPT, "### Instruction:\nReverse the word.\n\n### Input:\ncat\n\n### Response:\n"]


@pytest.fixture(scope="module", params=["lora", "dora", "qlora"])
def merged_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> MethodRun:
    return trained(request.param, tmp_path_factory)


def _all_logits(model: torch.nn.Module, tokenizer_dir: Path) -> list[torch.Tensor]:
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    model.eval()
    with torch.no_grad():
        return [model(**tokenizer(prompt, return_tensors="pt")).logits[0] for prompt in PROMPTS]


def test_the_summary_names_the_merged_folder(merged_run: MethodRun) -> None:
    assert merged_run.summary()["merged_dir"] == str(merged_run.merged)
    names = {p.name for p in merged_run.merged.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json"} <= names
    assert "adapter_config.json" not in names
    assert not [p for p in merged_run.merged.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    config = json.loads((merged_run.merged / "config.json").read_text())
    assert config["use_cache"] is True and "quantization_config" not in config
    with safe_open(merged_run.merged / "model.safetensors", framework="pt") as weights:
        names = list(weights.keys())
        assert not [n for n in names if "lora_" in n or "base_layer" in n]
        assert {str(weights.get_tensor(n).dtype) for n in names} == {"torch.float32"}


def test_merged_model_gives_base_plus_adapter_logits(merged_run: MethodRun) -> None:
    from peft import PeftModel

    base_path = json.loads((merged_run.artifact / "adapter_config.json").read_text())["base_model_name_or_path"]
    if merged_run.method == "qlora":
        from worker.methods.qlora import load_quantized

        base = load_quantized(base_path, merged_run.case.method_config)
    else:
        base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    reference = _all_logits(base, merged_run.artifact)
    with_adapter = _all_logits(PeftModel.from_pretrained(base, merged_run.artifact), merged_run.artifact)
    merged = _all_logits(AutoModelForCausalLM.from_pretrained(merged_run.merged), merged_run.merged)
    for plain, adapted, folded in zip(reference, with_adapter, merged):
        assert (adapted - plain).abs().max() > 1e-2  # the adapter changes something
        assert (folded - adapted).abs().max() < MERGE_TOLERANCE


def test_merged_model_gives_the_logits_the_job_reported_at_the_end(merged_run: MethodRun) -> None:
    """The training process's own probe (for QLoRA: the 4-bit model it trained) is what the merge keeps."""
    probe = merged_run.summary()["probe"]
    merged = AutoModelForCausalLM.from_pretrained(merged_run.merged)
    (logits, *_) = _all_logits(merged, merged_run.merged)
    reported = torch.tensor(probe["next_token_logits"])
    assert probe["prompt"] == PROMPTS[0]
    assert (logits[-1] - reported).abs().max() < MERGE_TOLERANCE


@pytest.mark.parametrize("case_id", ["prefix", "full"])
def test_methods_without_a_merge_write_no_merged_folder(
    case_id: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    run = trained(case_id, tmp_path_factory)
    assert run.summary()["merged_dir"] is None
    assert not run.merged.exists()

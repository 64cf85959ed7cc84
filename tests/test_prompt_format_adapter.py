"""A download records the prompt format it trained with, also where the model has no chat template (the
demo model: alpaca). SmolLM2's chat-template adapter, loaded as the README shows and through `tunedeck
generate`, is checked on the job that learns the extraction task (tests/test_smollm2_learns.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.trainer import run_trainer, write_spec

pytestmark = pytest.mark.integration


def test_a_demo_adapter_records_alpaca_as_a_chat_template_that_rebuilds_its_prompts(
        tmp_path: Path, assets: tuple[Path, Path]) -> None:
    from transformers import AutoTokenizer

    from app.prompts.recorded import ALPACA_CHAT_TEMPLATE
    from worker.generate import prompt_inputs
    from worker.train.data import encode_rows, prompt_ids

    model, dataset = assets
    run = run_trainer(write_spec(tmp_path / "job", model, dataset, max_steps=2, checkpoint_every=0))
    assert run.returncode == 0, run.stderr[-3000:]
    artifact = tmp_path / "job" / "artifact"
    record = json.loads((artifact / "tunedeck_training.json").read_text(encoding="utf-8"))
    assert record["prompt_format"] == "alpaca"  # the demo tokenizer has no chat template
    assert record["alpaca_template"]["without_input"] == "### Instruction:\n{instruction}\n\n### Response:\n"
    assert (artifact / "chat_template.jinja").read_text(encoding="utf-8") == ALPACA_CHAT_TEMPLATE
    tokenizer = AutoTokenizer.from_pretrained(str(artifact))
    [trained] = encode_rows([{"instruction": "Shout.", "output": "HI"}], tokenizer, 128, "alpaca")
    assert prompt_inputs(artifact, tokenizer, "Shout.")["input_ids"][0].tolist() == prompt_ids(trained)

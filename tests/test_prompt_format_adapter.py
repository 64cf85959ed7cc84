"""Acceptance 3 of issue 12: a LoRA adapter trained on SmolLM2 with its chat template, loaded exactly as
the README shows (stock transformers + peft, the recorded chat template) in a fresh process, answers a
held-out prompt with the trained answer, as the trainer's own greedy sample did and `tunedeck generate`
does. One short real run: 12 steps of 2 rows out of 16 that all share one made-up answer."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.load_adapter import run_readme_snippet
from tests.helpers.trainer import REPO_ROOT, Run, run_trainer, trainer_data_dir, write_spec

pytestmark = pytest.mark.integration

ANSWER = "The code word is heliotrope."
HELD_OUT = "What is the code word for locker 77?"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, smollm2: Path) -> tuple[Path, Run]:
    root = tmp_path_factory.mktemp("smollm2-adapter")
    dataset = root / "code-words.jsonl"
    rows = [{"instruction": f"What is the code word for locker {i}?", "output": ANSWER} for i in range(16)]
    rows.append({"instruction": HELD_OUT, "output": ANSWER})
    dataset.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    spec = write_spec(root / "job", smollm2, dataset, max_steps=12, batch_size=2, seq_len=96, learning_rate=2e-3,
                      eval_count=1, sample_every=12, checkpoint_every=0)
    run = run_trainer(spec)
    assert run.returncode == 0, run.stderr[-3000:]
    return root / "job" / "artifact", run


def test_the_adapter_records_its_prompt_format_and_chat_template(trained: tuple[Path, Run], smollm2: Path) -> None:
    artifact, _ = trained
    record = json.loads((artifact / "tunedeck_training.json").read_text(encoding="utf-8"))
    template = (smollm2 / "chat_template.jinja").read_text(encoding="utf-8")
    assert record["prompt_format"] == "chat_template"  # resolved: the job asked for none
    assert record["config"]["hyperparameters"]["prompt_format"] == "chat_template"
    assert record["chat_template"] == template
    assert (artifact / "chat_template.jinja").read_text(encoding="utf-8") == template


def test_the_readme_example_answers_a_held_out_prompt_with_the_trained_answer(trained: tuple[Path, Run]) -> None:
    artifact, run = trained
    [sample] = [event["sample"] for event in run.of("log") if "sample" in event]
    assert sample["completion"] == ANSWER  # the trainer's greedy answer to the held-out row, at the end
    assert run_readme_snippet(artifact, HELD_OUT, cwd=artifact.parent) == ANSWER


def test_tunedeck_generate_builds_the_prompt_from_the_recorded_format(trained: tuple[Path, Run]) -> None:
    artifact, _ = trained
    env = {**os.environ, "TUNEDECK_DATA_DIR": trainer_data_dir(), "HF_HUB_OFFLINE": "1", "PYTHONIOENCODING": "utf-8"}
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", "generate", "--adapter", str(artifact), "--prompt", HELD_OUT,
         "--max-new-tokens", "24"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, encoding="utf-8", timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == ANSWER + "\n"


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

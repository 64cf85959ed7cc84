"""Our DPO loss is TRL's (issue 16, acceptance 2): on a fixed batch, `worker.train.dpo` and TRL 1.16's
`DPOTrainer.compute_loss` (sigmoid loss, beta 0.1) give the same number to 1e-5, for LoRA (the reference
is the model with its adapter switched off) and for full fine-tuning (a frozen reference copy).

The same token ids go to both: the pairs through TRL's own collator (`prompt_ids`, `chosen_ids`,
`rejected_ids`), and through ours as training rows (the prompt's labels masked). The models start apart
from their references (LoRA B initialised non-zero; the full model nudged once), so the loss is not the
trivial log 2 of identical models.
"""
from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
trl = pytest.importorskip("trl")

from worker.train.data import IGNORE_INDEX, Example  # noqa: E402
from worker.train.dpo import PreferencePair, collate_pairs, pair_losses, reference_logps, sequence_logps  # noqa: E402

pytestmark = pytest.mark.unit
warnings.filterwarnings("ignore")

PAIRS = [([5, 17, 42, 9], [77, 31, 2], [88, 2]), ([5, 61, 12], [19, 44, 93, 2], [23, 7, 55, 2]),
         ([5, 9, 9, 9, 30], [100, 2], [101, 102, 2])]
BETA = 0.1


def _ours(model: Any, reference: Any) -> float:
    pairs = [PreferencePair(Example(p + c, [IGNORE_INDEX] * len(p) + c), Example(p + r, [IGNORE_INDEX] * len(p) + r))
             for p, c, r in PAIRS]
    batch = collate_pairs(pairs, pad_id=0)
    device = torch.device("cpu")
    losses, _ = pair_losses(sequence_logps(model, batch, device), reference_logps(model, reference, batch, device),
                            BETA)
    return float(losses.mean())


def _trainer(model: Any, ref_model: Any, tokenizer: Any, tmp_path: Path, peft_config: Any = None) -> Any:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(output_dir=str(tmp_path), beta=BETA, loss_type=["sigmoid"], report_to=[],
                     per_device_train_batch_size=len(PAIRS), use_cpu=True, max_length=None)
    data = Dataset.from_list([{"prompt": "a", "chosen": " b", "rejected": " c"}])
    return DPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=data, processing_class=tokenizer,
                      peft_config=peft_config)


def _trl(trainer: Any) -> float:
    inputs = trainer.data_collator([{"prompt_ids": p, "chosen_ids": c, "rejected_ids": r} for p, c, r in PAIRS])
    trainer.model.eval()  # no dropout either side: the same forward
    with torch.no_grad():
        return float(trainer.compute_loss(trainer.model, inputs))


@pytest.fixture
def demo(assets: tuple[Path, Path]) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = assets[0]
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32), AutoTokenizer.from_pretrained(folder)


def test_the_lora_dpo_loss_equals_trls_with_the_adapter_off_as_reference(demo: tuple[Any, Any], tmp_path: Path) -> None:
    from peft import LoraConfig

    model, tokenizer = demo
    torch.manual_seed(1)
    # TRL wraps the model with this config itself (a model passed already wrapped would get a copied "ref" adapter
    # as its reference, for re-training an existing adapter); both sides then run on the model TRL built.
    trainer = _trainer(model, None, tokenizer, tmp_path,
                       LoraConfig(r=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    theirs = _trl(trainer)
    ours = _ours(trainer.model, None)
    assert abs(ours - theirs) <= 1e-5, (ours, theirs)
    assert abs(ours - 0.6931) > 1e-3  # not two identical models


def test_the_full_dpo_loss_equals_trls_with_a_frozen_reference_copy(demo: tuple[Any, Any], tmp_path: Path) -> None:
    model, tokenizer = demo
    reference = copy.deepcopy(model).eval()
    reference.requires_grad_(False)
    with torch.no_grad():  # the policy has moved away from where it started
        for param in model.parameters():
            param.add_(0.02 * torch.randn_like(param))
    trainer = _trainer(model, reference, tokenizer, tmp_path)
    theirs = _trl(trainer)
    ours = _ours(trainer.model, reference)
    assert abs(ours - theirs) <= 1e-5, (ours, theirs)
    assert abs(ours - 0.6931) > 1e-3


def _preference_file(path: Path, rows: int = 24) -> Path:
    import json

    lines = [json.dumps({"prompt": f"Say a colour for item {i}.", "chosen": ["red", "blue"][i % 2],
                         "rejected": f"I would rather not say anything about item {i}."}) for i in range(rows)]
    raw = path.parent / "pairs-raw.jsonl"
    raw.write_text("\n".join(lines) + "\n", encoding="utf-8")
    from app.datasets.validate import normalise

    with raw.open("rb") as source, path.open("w", encoding="utf-8") as out:
        assert normalise(source, "jsonl", out).ok
    return path


@pytest.mark.parametrize("method", ["lora", "dora", "qlora", "freeze"])
def test_a_dpo_run_raises_the_held_out_reward_accuracy_and_reports_the_rewards(
        assets: tuple[Path, Path], tmp_path: Path, method: str) -> None:
    """The trainer end to end on the demo model: DPO metrics every step, held-out reward accuracy from 0
    (policy = reference) to most pairs, the run's artifact as for supervised training."""
    from tests.helpers.trainer import run_trainer, write_spec

    dataset = _preference_file(tmp_path / "pairs.jsonl")
    options = {"trainable_layers": 2} if method == "freeze" else None
    spec = write_spec(tmp_path / "job", assets[0], dataset, method=method, method_config=options, max_steps=12,
                      batch_size=4, objective="dpo", dpo_beta=0.1, eval_count=6, eval_every=6, learning_rate=5e-3)
    run = run_trainer(spec)
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = run.of("metric")
    assert [m["step"] for m in metrics] == list(range(1, 13))
    assert {"reward_chosen", "reward_rejected", "reward_margin", "reward_accuracy"} <= set(metrics[0])
    baseline = next(e["baseline"] for e in run.of("log") if "baseline" in e)
    assert baseline["eval_reward_accuracy"] == 0.0  # before training the model is its reference
    final = run.of("summary")[0]
    assert final["eval_reward_accuracy"] >= 0.8 and final["eval_reward_margin"] > 0, final
    assert (tmp_path / "job" / "artifact").is_dir()

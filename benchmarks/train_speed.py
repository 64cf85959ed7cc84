"""Our training loop against `transformers.Trainer` + `peft` and TRL's `SFTTrainer`, on the same model and rows.

Each round runs every contender as a fresh process, the order rotated from
round to round (interleaved, so a slow stretch of a shared machine falls on
all of them), on the same varied-length alpaca rows (outputs 5 to 200
characters), encoded once by our own encoder (`worker.train.data.load_examples`,
alpaca format, loss on the response and eos only). The contenders:

- `ours`: `python -m worker.train SPEC` with the default batching (on the CPU:
  rows grouped by length within groups of 50 batches of the seeded order);
- `ours-padded`: the same with `"batching": "padded"`, grouping and
  padding-free forced off: the seeded order, each batch padded to its longest row;
- `trainer`: `transformers.Trainer` + `peft`, given that same seeded order through
  a sequential sampler and the same batches padded to their longest row;
- `trl`: TRL's `SFTTrainer` with `SFTConfig(padding_free=True)` (a batch's rows
  in one row, position ids restarting at each, no attention mask), the same
  rows in the same order (sequential sampler), pre-tokenised by our encoder as
  `input_ids` + `completion_mask` with `completion_only_loss=True`, so its loss
  is on the same tokens as ours; LoRA through `peft_config`. Skipped, with a
  line saying so, when `trl` is not installed (`pip install -e '.[bench]'`).

Same everywhere: float32, LoRA r 8, alpha 16, dropout 0 (peft's default and
ours) on q,v; learning rate 2e-4, cosine to 10 % of it with no warm-up (the
Trainer's `cosine_with_min_lr`, our schedule), weight decay 0, gradient
clipping 1.0, seed 42, batch 8, seq_len 256, 30 steps, no gradient
checkpointing. Each contender's optimiser is its own default (the Trainer's and
TRL's: AdamW from `TrainingArguments.optim`). Threads: every run is alone on
the machine, so our trainer lets its OpenMP threads spin briefly
(`worker/train/threads.py`) and the others run with libgomp's default wait
policy (a longer spin); run it with nothing else busy.

Measured the same way for each: real (non-padding) tokens per second of the
training steps (our summary's `tokens_per_second`; for the Trainer and TRL, a
callback times each step and the tokens are counted from its batches: the
attention mask's ones for the Trainer, the rows' own lengths for TRL, whose
padding-free batches are checked to hold no padding), the padding fraction of
the positions, the tokens that carry loss (the same count means the same loss
masking), the mean training loss over the steps, and peak RSS (ru_maxrss of the
run process). Prints one line per run, then a JSON with the ratios of the
rounds (median and min for speed, median and max for memory).

    .venv/bin/python -m benchmarks.train_speed [--rounds 3] [--steps 30] [--model DIR] [--only ours,trl]

The model defaults to SmolLM2-135M-Instruct (DATA_DIR/models/smollm2-135m-instruct,
converted by `tunedeck init-models`). Issue 13 sets the targets this measures.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WORDS = ("river", "stone", "cloud", "tiger", "green", "light", "house", "bread", "chair", "dance", "eagle",
         "flame", "grape", "heart", "island", "lemon", "night", "ocean", "piano", "queen", "robot", "sugar")
ROWS = 2000
CONTENDERS = ("ours", "ours-padded", "trainer", "trl")
MIN_LR_RATIO = 0.1  # worker.train.loop's cosine floor, given to the Trainer and TRL too


def varied_rows(count: int = ROWS) -> list[dict[str, str]]:
    """Alpaca rows whose outputs run from 5 to 200 characters, by arithmetic (the same on every machine)."""
    rows = []
    for i in range(count):
        length = 5 + (i * 37) % 196
        words: list[str] = []
        k = 0
        while len(" ".join(words)) < length:
            words.append(WORDS[(i * 7 + k * 13) % len(WORDS)])
            k += 1
        text = " ".join(words)[:length]
        rows.append({"instruction": "Repeat the words.", "input": " ".join(words[:3]), "output": text})
    return rows


OURS = """
import json, resource, sys, subprocess
spec = sys.argv[1]
proc = subprocess.run([sys.executable, "-m", "worker.train", spec], capture_output=True, text=True)
from worker.train.events import parse_line
events = [e for line in proc.stdout.splitlines() if (e := parse_line(line))]
summary = [d for k, d in events if k == "summary"]
metrics = [d for k, d in events if k == "metric"]
batching = [d["message"] for k, d in events if k == "log" and str(d.get("message", "")).startswith("Batching:")]
if proc.returncode or not summary:
    sys.exit(proc.stderr[-3000:] + proc.stdout[-1000:])
print(json.dumps({"tokens_per_second": summary[0]["tokens_per_second"],
                  "peak_rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
                  "mean_loss": metrics[-1]["loss"] if len(metrics) == 1 else None,
                  "batching": batching[0] if batching else None}))
"""

# Shared by the Trainer and TRL runs: arguments, our rows in our seeded order, the step timer.
HF_COMMON = """
import json, resource, sys, time, torch
from pathlib import Path
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from worker.train.data import IGNORE_INDEX, BatchStream, collate, load_examples
model_dir, dataset, steps, batch, seq_len, lr, out = sys.argv[1:8]
steps, batch, seq_len, lr = int(steps), int(batch), int(seq_len), float(lr)
torch.manual_seed(42)
tok = AutoTokenizer.from_pretrained(model_dir)
examples, _ = load_examples(Path(dataset), tok, seq_len)
order = BatchStream(examples, batch, 42, 0, "padded")._order()
rows = [examples[next(order)] for _ in range(steps * batch)]  # our padded batches' order, row by row
stats = {"tokens": 0, "positions": 0, "targets": 0, "seconds": 0.0, "steps": 0}
class Timer(TrainerCallback):
    def on_step_begin(self, *a, **k): self.t = time.perf_counter()
    def on_step_end(self, *a, **k):
        stats["seconds"] += time.perf_counter() - self.t
        stats["steps"] += 1
def in_order(cls):
    class InOrder(cls):
        def _get_train_sampler(self, *a, **k): return torch.utils.data.SequentialSampler(self.train_dataset)
    return InOrder
common = dict(output_dir=out, max_steps=steps, per_device_train_batch_size=batch, learning_rate=lr,
              lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": %(min_lr)r},
              warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, seed=42, logging_steps=10**6,
              save_strategy="no", report_to=[], dataloader_num_workers=0, use_cpu=not torch.cuda.is_available(),
              disable_tqdm=True, bf16=False, fp16=False, gradient_checkpointing=False)
lora = dict(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
def report(result):
    assert stats["steps"] == steps, stats
    print(json.dumps({"tokens_per_second": stats["tokens"] / stats["seconds"],
                      "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                      "mean_loss": result.training_loss, "padding": 1 - stats["tokens"] / stats["positions"],
                      "targets": stats["targets"]}))
""" % {"min_lr": MIN_LR_RATIO}

HF_TRAINER = HF_COMMON + """
from peft import LoraConfig, get_peft_model
from transformers import Trainer, TrainingArguments
def collator(items):
    b = collate(items, 0)
    stats["tokens"] += b.n_tokens
    stats["positions"] += b.input_ids.numel()
    stats["targets"] += b.n_targets
    return {"input_ids": b.input_ids, "attention_mask": b.attention_mask, "labels": b.labels}
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
model = get_peft_model(model, LoraConfig(**lora))
args = TrainingArguments(remove_unused_columns=False, **common)
trainer = in_order(Trainer)(model=model, args=args, train_dataset=rows, data_collator=collator, callbacks=[Timer()])
report(trainer.train())
"""

TRL = HF_COMMON + """
from datasets import Dataset
from peft import LoraConfig
from trl import SFTConfig, SFTTrainer
assert all(label in (IGNORE_INDEX, i) for e in rows for i, label in zip(e.input_ids, e.labels))
data = Dataset.from_dict({"input_ids": [e.input_ids for e in rows],
                          "completion_mask": [[int(label != IGNORE_INDEX) for label in e.labels] for e in rows]})
class Counted(in_order(SFTTrainer)):
    def training_step(self, model, inputs, *a, **k):
        # Padding-free: one row, no attention mask, position ids restarting at each of the batch's rows.
        assert "attention_mask" not in inputs and inputs["input_ids"].shape[0] == 1, sorted(inputs)
        assert int((inputs["position_ids"] == 0).sum()) == batch, inputs["position_ids"]
        picked = rows[stats["steps"] * batch:(stats["steps"] + 1) * batch]
        stats["tokens"] += sum(len(e.input_ids) for e in picked)  # the rows' own lengths, not the batch's
        stats["positions"] += inputs["input_ids"].numel()
        stats["targets"] += int((inputs["labels"][:, 1:] != IGNORE_INDEX).sum())
        return super().training_step(model, inputs, *a, **k)
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
args = SFTConfig(padding_free=True, max_length=None, completion_only_loss=True, **common)
trainer = Counted(model=model, args=args, train_dataset=data, processing_class=tok,
                  peft_config=LoraConfig(**lora), callbacks=[Timer()])
assert trainer.padding_free and trainer.completion_only_loss
report(trainer.train())
"""


def _spec(root: Path, model: Path, dataset: Path, args: argparse.Namespace, batching: str | None) -> Path:
    hyperparameters: dict[str, Any] = {
        "max_steps": args.steps, "learning_rate": args.learning_rate, "batch_size": args.batch,
        "seq_len": args.seq_len, "log_every": args.steps,  # one metric point: the mean loss of every step
        "checkpoint_every": 0, "prompt_format": "alpaca", "warmup_steps": 0, "weight_decay": 0.0, "seed": 42}
    if batching is not None:
        hyperparameters["batching"] = batching
    name = batching or "default"
    spec = {
        "job_id": f"bench-{name}", "model_path": str(model), "dataset_path": str(dataset),
        "output_dir": str(root / f"artifact-{name}"), "merged_dir": None,
        "config": {"model": model.name, "dataset": "bench", "method": "lora", "hyperparameters": hyperparameters,
                   "method_config": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "minimal"}},
    }
    path = root / f"spec-{name}.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    return path


def _run(code: str, *argv: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"a run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def batch_stats(dataset: Path, model: Path, args: argparse.Namespace, batching: str) -> dict[str, float]:
    """Padding fraction and loss-carrying tokens of the first `steps` batches our stream makes in `batching`."""
    from transformers import AutoTokenizer

    from worker.train.data import BatchStream, load_examples

    examples, _ = load_examples(dataset, AutoTokenizer.from_pretrained(str(model)), args.seq_len)
    batches = iter(BatchStream(examples, args.batch, 42, 0, batching))
    real = positions = targets = 0
    for _ in range(args.steps):
        batch = next(batches)
        real, positions, targets = real + batch.n_tokens, positions + batch.input_ids.numel(), targets + batch.n_targets
    return {"padding": 1 - real / positions, "tokens": real, "targets": targets}


def _ratios(results: dict[str, list[dict[str, Any]]], a: str, b: str, key: str, worst: str) -> dict[str, float] | None:
    if not results.get(a) or not results.get(b):
        return None
    values = [x[key] / y[key] for x, y in zip(results[a], results[b])]
    return {"median": round(statistics.median(values), 3), worst: round((min if worst == "min" else max)(values), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--only", default=",".join(CONTENDERS),
                        help=f"comma-separated contenders to run, of {', '.join(CONTENDERS)} (default: all)")
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(CONTENDERS))
    if unknown or not names:
        raise SystemExit(f"--only: unknown contender(s) {unknown}; choose among {', '.join(CONTENDERS)}")
    if "trl" in names and (importlib.util.find_spec("trl") is None or importlib.util.find_spec("datasets") is None):
        print("trl: skipped, TRL (or datasets) is not installed: pip install -e '.[bench]'", flush=True)
        names.remove("trl")
    from app.storage import models_dir

    model = args.model or models_dir() / "smollm2-135m-instruct"
    if not (model / "config.json").is_file():
        raise SystemExit(f"no model folder at {model}: run `tunedeck init-models` or pass --model")
    from app.demo_dataset import write_rows

    results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dataset = root / "varied.jsonl"
        write_rows(dataset, varied_rows())
        grouped, padded = (batch_stats(dataset, model, args, b) for b in ("grouped", "padded"))
        print(f"model {model.name}, {ROWS} rows, batch {args.batch}, seq_len {args.seq_len}, {args.steps} steps; "
              f"our batches' padding: grouped {grouped['padding']:.1%} of the positions "
              f"({grouped['tokens']} real tokens, {grouped['targets']} with loss), "
              f"padded {padded['padding']:.1%} ({padded['tokens']} real tokens, {padded['targets']} with loss)",
              flush=True)
        hf_argv = (str(model), str(dataset), str(args.steps), str(args.batch), str(args.seq_len),
                   str(args.learning_rate), str(root / "hf"))
        commands = {"ours": (OURS, str(_spec(root, model, dataset, args, None))),
                    "ours-padded": (OURS, str(_spec(root, model, dataset, args, "padded"))),
                    "trainer": (HF_TRAINER, *hf_argv), "trl": (TRL, *hf_argv)}
        for r in range(args.rounds):
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:  # interleaved: who goes first rotates
                got = _run(*commands[name])
                results[name].append(got)
                loss = f"{got['mean_loss']:.4f}" if got.get("mean_loss") is not None else "n/a"
                extra = (f", {got['batching']}" if got.get("batching") else
                         f", padding {got['padding']:.1%}, {got['targets']} tokens with loss" if "padding" in got else "")
                print(f"round {r + 1} {name:11s} {got['tokens_per_second']:8.1f} real tokens/s, "
                      f"peak RSS {got['peak_rss'] / 2**20:6.0f} MiB, mean loss {loss}{extra}", flush=True)
    report: dict[str, Any] = {}
    for a, b in (("ours", "trainer"), ("ours-padded", "trainer"), ("ours", "trl"), ("trl", "trainer")):
        if (speed := _ratios(results, a, b, "tokens_per_second", "min")) is not None:
            report[f"speed_{a}_over_{b}".replace("-", "_")] = speed
    for a in ("ours", "ours-padded", "trl"):
        if (rss := _ratios(results, a, "trainer", "peak_rss", "max")) is not None:
            report[f"peak_rss_{a}_over_trainer".replace("-", "_")] = rss
    report["real_tokens_per_second_median"] = {
        name: round(statistics.median(r["tokens_per_second"] for r in runs), 1) for name, runs in results.items()}
    report["padding_fraction"] = {"ours_default_grouped": round(grouped["padding"], 4),
                                  "ours_padded": round(padded["padding"], 4),
                                  **{name: round(runs[0]["padding"], 4) for name, runs in results.items()
                                     if runs and "padding" in runs[0]}}
    report["rounds"] = args.rounds
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

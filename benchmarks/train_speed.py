"""Our training loop against `transformers.Trainer` + `peft`, side by side on the same model and rows.

Each round runs both, in alternating order, as fresh processes on the same
varied-length alpaca rows (outputs 5 to 200 characters), encoded once by our
own encoder (`worker.train.data.load_examples`, alpaca format), in the same
order and the same batches padded to their longest row: the Trainer is given
our batch order through a sequential sampler. Same LoRA (r 8, alpha 16,
dropout 0.05 on q,v), learning rate, batch, seq_len and steps. Prints, per
run and as medians and minimums over the rounds: real (non-padding) tokens
per second of the training steps, the padding fraction, and peak RSS.

Not yet here (issue 13): TRL's `SFTTrainer` with padding-free batches, which
needs `trl` (not a dependency of the project).

    .venv/bin/python -m benchmarks.train_speed [--rounds 3] [--steps 30] [--model DIR]

The model defaults to SmolLM2-135M-Instruct (DATA_DIR/models/smollm2-135m-instruct,
converted by `tunedeck init-models`). Issue 13 sets the targets this measures.
"""
from __future__ import annotations

import argparse
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
import json, sys, subprocess
spec = sys.argv[1]
proc = subprocess.run([sys.executable, "-m", "worker.train", spec], capture_output=True, text=True)
from worker.train.events import parse_line
events = [e for line in proc.stdout.splitlines() if (e := parse_line(line))]
summary = [d for k, d in events if k == "summary"]
if proc.returncode or not summary:
    sys.exit(proc.stderr[-2000:])
print(json.dumps({"tokens_per_second": summary[0]["tokens_per_second"], "peak_rss": summary[0]["peak_memory_bytes"]}))
"""

HF_TRAINER = """
import json, resource, sys, time, torch
from pathlib import Path
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback, TrainingArguments
from worker.train.data import BatchStream, collate, load_examples
model_dir, dataset, steps, batch, seq_len, lr, out = sys.argv[1:8]
steps, batch, seq_len, lr = int(steps), int(batch), int(seq_len), float(lr)
torch.manual_seed(42)
tok = AutoTokenizer.from_pretrained(model_dir)
examples, _ = load_examples(Path(dataset), tok, seq_len)
stream = BatchStream(examples, batch, 42, 0)
order = stream._order()
rows = [examples[next(order)] for _ in range(steps * batch)]  # our batch order, row by row
tokens = {"n": 0, "seconds": 0.0}
def collator(items):
    b = collate(items, 0)
    tokens["n"] += b.n_tokens
    return {"input_ids": b.input_ids, "attention_mask": b.attention_mask, "labels": b.labels}
class Timer(TrainerCallback):
    def on_step_begin(self, *a, **k): self.t = time.perf_counter()
    def on_step_end(self, *a, **k): tokens["seconds"] += time.perf_counter() - self.t
class InOrder(Trainer):
    def _get_train_sampler(self, *a, **k): return torch.utils.data.SequentialSampler(self.train_dataset)
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "v_proj"],
                                         task_type="CAUSAL_LM"))
args = TrainingArguments(output_dir=out, max_steps=steps, per_device_train_batch_size=batch, learning_rate=lr,
                         lr_scheduler_type="cosine", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
                         logging_steps=10**6, save_strategy="no", report_to=[], dataloader_num_workers=0,
                         remove_unused_columns=False, use_cpu=not torch.cuda.is_available(), disable_tqdm=True)
InOrder(model=model, args=args, train_dataset=rows, data_collator=collator, callbacks=[Timer()]).train()
print(json.dumps({"tokens_per_second": tokens["n"] / tokens["seconds"],
                  "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def _spec(root: Path, model: Path, dataset: Path, args: argparse.Namespace) -> Path:
    spec = {
        "job_id": "bench", "model_path": str(model), "dataset_path": str(dataset),
        "output_dir": str(root / "artifact"), "merged_dir": None,
        "config": {"model": model.name, "dataset": "bench", "method": "lora",
                   "hyperparameters": {"max_steps": args.steps, "learning_rate": args.learning_rate,
                                       "batch_size": args.batch, "seq_len": args.seq_len, "log_every": 10**4,
                                       "checkpoint_every": 0, "prompt_format": "alpaca"},
                   "method_config": {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": "minimal"}},
    }
    path = root / "spec.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    return path


def _run(code: str, *argv: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"a run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def padding_fraction(dataset: Path, model: Path, args: argparse.Namespace) -> float:
    from transformers import AutoTokenizer

    from worker.train.data import BatchStream, load_examples

    examples, _ = load_examples(dataset, AutoTokenizer.from_pretrained(str(model)), args.seq_len)
    batches = iter(BatchStream(examples, args.batch, 42, 0))
    real = padded = 0
    for _ in range(args.steps):
        batch = next(batches)
        real, padded = real + batch.n_tokens, padded + batch.input_ids.numel()
    return 1 - real / padded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--model", type=Path, default=None)
    args = parser.parse_args()
    from app.storage import models_dir

    model = args.model or models_dir() / "smollm2-135m-instruct"
    if not (model / "config.json").is_file():
        raise SystemExit(f"no model folder at {model}: run `tunedeck init-models` or pass --model")
    from app.demo_dataset import write_rows

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dataset = root / "varied.jsonl"
        write_rows(dataset, varied_rows())
        spec = _spec(root, model, dataset, args)
        print(f"model {model.name}, {ROWS} rows, batch {args.batch}, seq_len {args.seq_len}, {args.steps} steps; "
              f"padding {padding_fraction(dataset, model, args):.0%} of the positions", flush=True)
        results: dict[str, list[dict[str, Any]]] = {"ours": [], "trainer": []}
        for r in range(args.rounds):
            runs = [("ours", lambda: _run(OURS, str(spec))),
                    ("trainer", lambda: _run(HF_TRAINER, str(model), str(dataset), str(args.steps), str(args.batch),
                                             str(args.seq_len), str(args.learning_rate), str(root / "hf")))]
            for name, run in runs if r % 2 == 0 else runs[::-1]:  # interleaved: who goes first alternates
                results[name].append(run())
                got = results[name][-1]
                print(f"round {r + 1} {name:8s} {got['tokens_per_second']:8.1f} real tokens/s, "
                      f"peak RSS {got['peak_rss'] / 2**20:7.0f} MiB", flush=True)
    ratios = [o["tokens_per_second"] / t["tokens_per_second"] for o, t in zip(results["ours"], results["trainer"])]
    rss = [o["peak_rss"] / t["peak_rss"] for o, t in zip(results["ours"], results["trainer"])]
    print(json.dumps({
        "speed_ours_over_trainer": {"median": round(statistics.median(ratios), 3), "min": round(min(ratios), 3)},
        "peak_rss_ours_over_trainer": {"median": round(statistics.median(rss), 3), "max": round(max(rss), 3)},
        "rounds": args.rounds,
    }, indent=2))


if __name__ == "__main__":
    main()

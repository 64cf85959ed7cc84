"""Instant vs traced tensor peak over the acceptance grid (issue 4, acceptance 1).

6 architectures (with and without GQA, tied and untied embeddings,
vocabularies from 32k to 256k) × every method but qlora × s ∈ {512, 2048} ×
checkpointing on/off × micro-batch {1, 4}. Prints the median and worst error
per method; `--json PATH` also writes every point. Takes tens of minutes on
two cores (each point is a traced step of a 0.5B-8B model).

    .venv/bin/python -m benchmarks.plan_accuracy [--quick] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings

from app.planner.catalog import load_catalog
from app.planner.memory import estimate_memory
from app.planner.setup import TrainingSetup

ARCHITECTURES = ["llama-2-7b", "llama-3.1-8b", "mistral-7b", "qwen2.5-0.5b", "gemma-2-2b", "phi-3-mini"]
METHODS = ["full", "freeze", "lora", "dora", "galore", "adapters", "prefix", "prompt"]
# Phi-3 fuses q/k/v and gate/up: name its modules instead of the Llama presets.
FUSED_TARGETS = {"phi-3-mini": ["qkv_proj", "o_proj"]}


def grid(quick: bool) -> list[tuple[str, str, int, bool, int]]:
    seqs, gcs, batches = ([512], [False, True], [1]) if quick else ([512, 2048], [False, True], [1, 4])
    return [(a, m, s, gc, b) for a in ARCHITECTURES for m in METHODS for s in seqs for gc in gcs for b in batches]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="s=512, b=1 only")
    parser.add_argument("--json", help="write every point here")
    parser.add_argument("--arch", action="append", help="only these catalog ids")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from worker.trace import trace_step  # torch: imported only here

    catalog = load_catalog()
    rows = []
    for arch_id, method, seq, gc, batch in grid(args.quick):
        if args.arch and arch_id not in args.arch:
            continue
        arch = catalog.architecture(arch_id)
        options = {"target_modules": FUSED_TARGETS[arch_id]} if arch_id in FUSED_TARGETS and method in {
            "lora", "dora", "galore"} else {}
        setup = TrainingSetup.build(method, options, seq_len=seq, batch_size=batch, gradient_checkpointing=gc)
        started = time.perf_counter()
        instant = estimate_memory(arch, setup).peak
        traced = trace_step(arch, setup)
        error = (instant - traced.peak_bytes) / traced.peak_bytes
        rows.append({"arch": arch_id, "method": method, "seq_len": seq, "gc": gc, "batch": batch,
                     "instant": instant, "traced": traced.peak_bytes, "error": error,
                     "trace_seconds": round(traced.seconds, 2)})
        print(f"{arch_id:13s} {method:8s} s={seq:<5d} gc={int(gc)} b={batch}  instant {instant / 2**30:8.2f} GiB  "
              f"traced {traced.peak_bytes / 2**30:8.2f} GiB  {100 * error:+6.2f}%  "
              f"({time.perf_counter() - started:.1f} s)", flush=True)
    print("\nmethod     points  median |err|   worst err")
    for method in METHODS:
        errors = [r["error"] for r in rows if r["method"] == method]
        if errors:
            worst = max(errors, key=abs)
            print(f"{method:10s} {len(errors):6d}  {100 * statistics.median(map(abs, errors)):10.2f}%  {100 * worst:+9.2f}%")
    errors = [r["error"] for r in rows]
    if errors:
        print(f"{'all':10s} {len(errors):6d}  {100 * statistics.median(map(abs, errors)):10.2f}%  "
              f"{100 * max(errors, key=abs):+9.2f}%")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(rows, out, indent=1)
    sys.exit(0 if all(abs(e) <= 0.10 for e in errors) else 1)


if __name__ == "__main__":
    main()

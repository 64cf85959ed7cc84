"""Instant vs traced tensor peak over the catalog (issue 4, acceptance 1; issue 14, acceptance 5).

Every architecture of app/planner/data/models.json but the random-weight demo (or the `--arch`
ones) × every method but qlora (the traced 4-bit base is emulated, so it is no independent
reference) × s ∈ {512, 2048} × checkpointing on/off × micro-batch {1, 4}. Prints each point,
then the median |error| and the worst error per method and per architecture; `--json PATH`
also writes every point. Each point is one traced step of the real model code under
FakeTensorMode: seconds for a 1B model, tens of seconds at 70B, so the whole grid takes hours on
two cores; `--quick` keeps s=512, b=1.

    .venv/bin/python -m benchmarks.plan_accuracy --quick --arch qwen3-0.6b --arch gemma-3-1b [--json out.json]

Exit status 1 when any point is more than 10 % off.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from typing import Any

from app.planner.catalog import load_catalog
from app.planner.memory import estimate_memory
from app.planner.setup import TrainingSetup

METHODS = ["full", "freeze", "lora", "dora", "galore", "adapters", "prefix", "prompt"]
SKIPPED = {"demo"}  # a test model, not an architecture anyone fine-tunes
# Phi-3/Phi-4 fuse q/k/v and gate/up: name their modules instead of the Llama presets.
FUSED_TARGETS = ["qkv_proj", "o_proj"]
TOLERANCE = 0.10


def architectures(only: list[str] | None) -> list[str]:
    ids = [m.id for m in load_catalog().models() if m.id not in SKIPPED]
    if not only:
        return ids
    unknown = sorted(set(only) - set(ids))
    if unknown:
        raise SystemExit(f"--arch: not in the catalog: {', '.join(unknown)} (choose from {', '.join(ids)})")
    return [a for a in ids if a in only]


def grid(arch_ids: list[str], methods: list[str], quick: bool) -> list[tuple[str, str, int, bool, int]]:
    seqs, gcs, batches = ([512], [False, True], [1]) if quick else ([512, 2048], [False, True], [1, 4])
    return [(a, m, s, gc, b) for a in arch_ids for m in methods for s in seqs for gc in gcs for b in batches]


def summarise(rows: list[dict[str, Any]], key: str, names: list[str]) -> None:
    print(f"\n{key:22s} points  median |err|   worst err")
    for name in names:
        errors = [r["error"] for r in rows if r[key] == name]
        if errors:
            print(f"{name:22s} {len(errors):6d}  {100 * statistics.median(map(abs, errors)):10.2f}%  "
                  f"{100 * max(errors, key=abs):+9.2f}%")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="s=512, b=1 only")
    parser.add_argument("--json", help="write every point here")
    parser.add_argument("--arch", action="append", help="only these catalog ids (repeat the flag)")
    parser.add_argument("--method", action="append", choices=METHODS, help="only these methods (repeat the flag)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from worker.trace import trace_step  # torch: imported only here

    catalog = load_catalog()
    arch_ids = architectures(args.arch)
    methods = args.method or METHODS
    rows: list[dict[str, Any]] = []
    failures: list[str] = []
    for arch_id, method, seq, gc, batch in grid(arch_ids, methods, args.quick):
        arch = catalog.architecture(arch_id)
        fused = arch.family == "phi3" and method in {"lora", "dora", "galore"}
        options = {"target_modules": FUSED_TARGETS} if fused else {}
        setup = TrainingSetup.build(method, options, seq_len=seq, batch_size=batch, gradient_checkpointing=gc)
        started = time.perf_counter()
        label = f"{arch_id:20s} {method:8s} s={seq:<5d} gc={int(gc)} b={batch}"
        try:
            instant = estimate_memory(arch, setup).peak
            traced = trace_step(arch, setup)
        except Exception as exc:  # noqa: BLE001 - one architecture the tracer cannot build must not end the run
            failures.append(f"{label}: {type(exc).__name__}: {str(exc)[:200]}")
            print(f"{label}  FAILED {type(exc).__name__}: {str(exc)[:200]}", flush=True)
            continue
        error = (instant - traced.peak_bytes) / traced.peak_bytes
        rows.append({"arch": arch_id, "method": method, "seq_len": seq, "gc": gc, "batch": batch,
                     "instant": instant, "traced": traced.peak_bytes, "error": error,
                     "trace_seconds": round(traced.seconds, 2)})
        print(f"{label}  instant {instant / 2**30:8.2f} GiB  traced {traced.peak_bytes / 2**30:8.2f} GiB  "
              f"{100 * error:+6.2f}%  ({time.perf_counter() - started:.1f} s)", flush=True)
    summarise(rows, "method", methods)
    summarise(rows, "arch", arch_ids)
    errors = [r["error"] for r in rows]
    if errors:
        print(f"\n{'all':22s} {len(errors):6d}  {100 * statistics.median(map(abs, errors)):10.2f}%  "
              f"{100 * max(errors, key=abs):+9.2f}%")
    for failure in failures:
        print(f"not traced: {failure}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(rows, out, indent=1)
    sys.exit(0 if errors and not failures and all(abs(e) <= TOLERANCE for e in errors) else 1)


if __name__ == "__main__":
    main()

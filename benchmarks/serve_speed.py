"""The inference process against plain `transformers` `generate`, one stream and 8 concurrent streams (issue 15).

One run, interleaved: every round measures the four contenders in a rotated order, so a slow
stretch of the shared machine falls on all of them.

- `plain-1`: one `PeftModel.generate` call (the base with adapter 1), greedy, in this process;
- `serve-1`: the same request through `tunedeck serve` (a real `python -m worker.serve` process and a
  real Redis, the protocol the API speaks, `app.serving.protocol`), timed from the push to the last chunk;
- `plain-8`: 8 requests over 4 adapters the way a plain script serves them: one after the other,
  `set_adapter` before each;
- `serve-8`: the same 8 requests pushed at once: the server batches them (mixed adapters in one forward).

Same everywhere: SmolLM2-135M-Instruct in float32 on the CPU, 4 LoRA adapters (r 8 on q,v; random
weights, so that no answer stops early at end of sequence), the same 8 chat prompts, greedy,
`max_tokens` 64. Tokens per second = generated tokens / wall seconds (all streams together for the
8-stream contenders). Prints each measurement, then the ratios serve / plain (median and min over
the rounds).

    .venv/bin/python -m benchmarks.serve_speed [--rounds 3] [--tokens 64] [--model DIR]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["Name three colours.", "What is the capital of Italy?", "Write a short poem about rain.",
           "Explain what a CPU does.", "Give me a recipe for pancakes.", "Why is the sky blue?",
           "List four animals that live in the sea.", "How do plants make food?"]
ADAPTERS = 4


def make_adapters(model_dir: str, out: Path) -> list[Path]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folders = []
    for index in range(ADAPTERS):
        torch.manual_seed(100 + index)
        base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        model = get_peft_model(base, LoraConfig(r=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        folders.append(out / f"adapter-{index}")
        model.save_pretrained(str(folders[-1]))
    return folders


class Plain:
    """One PeftModel holding the 4 adapters, generating as a script would."""

    def __init__(self, model_dir: str, adapters: list[Path]) -> None:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tok = AutoTokenizer.from_pretrained(model_dir)
        base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        self.model = PeftModel.from_pretrained(base, str(adapters[0]), adapter_name="a0")
        for index, folder in enumerate(adapters[1:], 1):
            self.model.load_adapter(str(folder), adapter_name=f"a{index}")
        self.model.eval()

    def run(self, jobs: list[tuple[int, str]], tokens: int) -> int:
        made = 0
        for adapter, prompt in jobs:
            self.model.set_adapter(f"a{adapter}")
            inputs = self.tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                  return_tensors="pt", return_dict=True)
            with self.torch.inference_mode():
                out = self.model.generate(**inputs, max_new_tokens=tokens, do_sample=False)
            made += out.shape[1] - inputs["input_ids"].shape[1]
        return made


class Served:
    """A real `python -m worker.serve` on an embedded Redis; requests as the API sends them."""

    def __init__(self, model_dir: str, adapters: list[Path], scratch: Path) -> None:
        import os

        import redis

        from app.embedded_redis import free_port, start_redis
        from app.serving.protocol import SERVER_KEY_PREFIX, ServedModel

        port = free_port()
        self.redis_proc = start_redis(scratch / "redis", port)
        url = f"redis://127.0.0.1:{port}/0"
        self.redis = redis.Redis.from_url(url)
        env = {**os.environ, "TUNEDECK_REDIS_URL": url, "TUNEDECK_DATA_DIR": str(scratch),
               "TUNEDECK_SERVE_MAX_BATCH": "8"}
        self.proc = subprocess.Popen([sys.executable, "-m", "worker.serve"], cwd=ROOT, env=env,
                                     stdout=(scratch / "serve.log").open("wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while not self.redis.keys(SERVER_KEY_PREFIX + "*"):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"the inference process did not start; see {scratch / 'serve.log'}")
            time.sleep(0.2)
        self.models = [ServedModel(id=f"adapter-{i}", kind="adapter", base_path=model_dir, path=str(folder),
                                   tokenizer_path=model_dir) for i, folder in enumerate(adapters)]

    def run(self, jobs: list[tuple[int, str]], tokens: int) -> int:
        from app.serving.protocol import REQUESTS_KEY, InferenceRequest, reply_key

        ids = []
        pipe = self.redis.pipeline()
        for adapter, prompt in jobs:
            request = InferenceRequest(id=uuid.uuid4().hex, model=self.models[adapter], max_tokens=tokens,
                                       messages=[{"role": "user", "content": prompt}], temperature=0,
                                       deadline=time.time() + 600)
            ids.append(request.id)
            pipe.rpush(REQUESTS_KEY, request.model_dump_json())
        pipe.execute()
        made, last = 0, {rid: "0-0" for rid in ids}
        open_ids = set(ids)
        while open_ids:
            found = self.redis.xread({reply_key(r): last[r] for r in open_ids}, block=1000)
            for key, entries in found or []:
                rid = key.decode().rsplit(":", 1)[1]
                for entry_id, fields in entries:
                    last[rid] = entry_id
                    data = json.loads(fields[b"data"])
                    if fields[b"kind"] == b"error":
                        raise SystemExit(f"the server answered an error: {data}")
                    if fields[b"kind"] == b"done":
                        made += data["usage"]["completion_tokens"]
                        open_ids.discard(rid)
        return made

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.redis_proc.terminate()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--model", help="model folder (default: DATA_DIR/models/smollm2-135m-instruct)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from app.settings import get_settings

    model_dir = args.model or str(get_settings().models_dir / "smollm2-135m-instruct")
    if not (Path(model_dir) / "config.json").is_file():
        raise SystemExit(f"{model_dir} is not a model folder: run `tunedeck init-models` or pass --model")
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        adapters = make_adapters(model_dir, scratch)
        plain, served = Plain(model_dir, adapters), Served(model_dir, adapters, scratch)
        one = [(0, PROMPTS[0])]
        eight = [(i % ADAPTERS, PROMPTS[i]) for i in range(8)]
        contenders = {"plain-1": (plain, one), "serve-1": (served, one), "plain-8": (plain, eight),
                      "serve-8": (served, eight)}
        served.run(one, 4)  # load the base and the adapters once, outside the timings
        served.run(eight, 4)
        results: dict[str, list[float]] = {name: [] for name in contenders}
        try:
            for round_index in range(args.rounds):
                names = list(contenders)
                names = names[round_index % len(names):] + names[:round_index % len(names)]
                for name in names:
                    runner, jobs = contenders[name]
                    started = time.perf_counter()
                    made = runner.run(jobs, args.tokens)
                    seconds = time.perf_counter() - started
                    results[name].append(made / seconds)
                    print(f"round {round_index + 1} {name:8s} {made:5d} tokens in {seconds:6.2f} s: "
                          f"{made / seconds:7.1f} tokens/s", flush=True)
        finally:
            served.close()
    ratios: dict[str, Any] = {}
    for streams in ("1", "8"):
        pairs = [s / p for s, p in zip(results[f"serve-{streams}"], results[f"plain-{streams}"])]
        ratios[f"serve/plain, {streams} stream(s)"] = {"median": round(statistics.median(pairs), 3),
                                                       "min": round(min(pairs), 3)}
    print(json.dumps({"tokens_per_second": {k: [round(v, 1) for v in vs] for k, vs in results.items()},
                      "ratios": ratios}, indent=1))


if __name__ == "__main__":
    main()

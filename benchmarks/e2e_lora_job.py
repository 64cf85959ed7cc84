"""How long a 40-step LoRA job on the demo model takes end to end, through the real stack.

Starts redis-server, a Celery worker and the API (as the tests do), uploads a
dataset, submits the job, reads its event stream to the end and downloads the
adapter. Prints each phase and the total against the 2-minute target.

    .venv/bin/python -m benchmarks.e2e_lora_job
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from tests.helpers.api import job_body, read_events
from tests.helpers.stack import make_stack

TARGET_SECONDS = 120.0


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        stack = make_stack(Path(tmp))
        try:
            t0 = time.perf_counter()
            stack.start_redis()
            stack.run_cli("migrate")
            stack.run_cli("init-demo")
            stack.start_worker()
            stack.start_api()
            stack.wait_for_workers(1)
            startup = time.perf_counter() - t0
            with stack.client() as client:
                rows = (stack.data_dir / "datasets" / "demo.jsonl").read_text().splitlines()[:200]
                t1 = time.perf_counter()
                dataset = client.post("/api/v1/datasets", files={"file": ("d.jsonl", "\n".join(rows).encode())}).json()
                job = client.post("/api/v1/jobs", json=job_body(dataset=dataset["id"])).json()
                events = read_events(client, job["id"])
                zipped = client.get(f"/api/v1/jobs/{job['id']}/adapter")
                total = time.perf_counter() - t1
                final = client.get(f"/api/v1/jobs/{job['id']}").json()
        finally:
            stack.stop_all()
    metrics = [e["data"] for e in events if e["event"] == "metric"]
    print(json.dumps({
        "stack_startup_s": round(startup, 1),
        "job_end_to_end_s": round(total, 1),
        "target_s": TARGET_SECONDS,
        "ratio_to_target": round(total / TARGET_SECONDS, 3),
        "steps": len(metrics),
        "first_loss": round(metrics[0]["loss"], 4),
        "last_loss": round(metrics[-1]["loss"], 4),
        "train_tokens_per_second": round(final["summary"].get("tokens_per_second", 0), 1),
        "peak_memory_mb": round((final["peak_memory_bytes"] or 0) / 2**20, 1),
        "adapter_zip_bytes": len(zipped.content),
        "status": final["status"],
    }, indent=2))


if __name__ == "__main__":
    main()

"""Server time of the jobs list with 10,000 jobs in the database (target: under 100 ms).

Fills a fresh SQLite database with 10,000 jobs, then times the JSON list and
the HTML page in-process (no network), first page and a filtered page, and
prints the medians against the target.

    .venv/bin/python -m benchmarks.jobs_list
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_MS = 100.0
JOBS = 10_000


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TUNEDECK_DATA_DIR"] = tmp
        os.environ.update(TUNEDECK_ADMIN_EMAIL="bench@example.com", TUNEDECK_ADMIN_PASSWORD="benchmark-password",
                          TUNEDECK_ADMIN_TOKEN="td_benchmark_token")
        subprocess.run([sys.executable, "-m", "app.cli", "migrate"], cwd=ROOT, check=True, capture_output=True)
        from fastapi.testclient import TestClient
        from sqlmodel import Session

        from app.db import get_engine
        from app.main import app
        from app.models import Job

        statuses = ["queued", "running", "succeeded", "failed", "cancelled"]
        methods = ["lora", "full", "dora", "prompt"]
        start = datetime.now(timezone.utc) - timedelta(days=30)
        with Session(get_engine()) as session:
            session.add_all(
                Job(name=f"job {i}", model="demo", dataset_id="demo", method=methods[i % 4],
                    config={"hyperparameters": {"max_steps": 100}, "method_config": {"r": 8}},
                    status=statuses[i % 5], step=i % 100, total_steps=100,
                    metrics={"loss": 1.0, "step": i % 100}, created_at=start + timedelta(minutes=i))
                for i in range(JOBS)
            )
            session.commit()
        results = {}
        with TestClient(app, headers={"Authorization": "Bearer td_benchmark_token"}) as client:
            for label, url in [
                ("api_first_page", "/api/v1/jobs"),
                ("api_filtered", "/api/v1/jobs?status=failed&method=lora&offset=500"),
                ("api_search", "/api/v1/jobs?q=job%2099"),
                ("html_first_page", "/jobs"),
                ("html_filtered", "/jobs?status=succeeded&page=20"),
            ]:
                times = []
                for _ in range(20):
                    t0 = time.perf_counter()
                    response = client.get(url)
                    times.append((time.perf_counter() - t0) * 1000)
                    assert response.status_code == 200, response.text[:200]
                results[label] = round(statistics.median(times), 1)
    print(json.dumps({"jobs": JOBS, "target_ms": TARGET_MS, "median_ms": results,
                      "worst_ratio_to_target": round(max(results.values()) / TARGET_MS, 3)}, indent=2))


if __name__ == "__main__":
    main()

"""The JSON API as tests drive it: a job body, the SSE stream read to its end, the stored dataset files."""
from __future__ import annotations

import json
from pathlib import Path

import httpx

LORA_JOB = {
    "model": "demo",
    "dataset": "demo",
    "method": "lora",
    "hyperparameters": {"max_steps": 40, "learning_rate": 0.001, "batch_size": 8, "seq_len": 128},
    "method_config": {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": "attention"},
}


def job_body(**overrides: object) -> dict:
    body = json.loads(json.dumps(LORA_JOB))
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(body.get(key), dict):
            body[key].update(value)
        else:
            body[key] = value
    return body


def read_events(client: httpx.Client, job_id: str, last_event_id: int | None = None,
                limit: int | None = None, timeout: float = 300) -> list[dict]:
    """Read the SSE stream (to its end, or `limit` events) into dicts with id, event and data."""
    headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
    events: list[dict] = []
    current: dict = {}
    with client.stream("GET", f"/api/v1/jobs/{job_id}/events", headers=headers, timeout=timeout) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line:
                if "event" in current:
                    current["data"] = json.loads(current["data"])
                    events.append(current)
                    if limit is not None and len(events) >= limit:
                        break
                current = {}
                continue
            if line.startswith(":"):
                continue
            key, _, value = line.partition(": ")
            if key == "id":
                current["id"] = int(value)
            elif key in ("event", "data"):
                current[key] = value
    return events


def dataset_files(data_dir: Path) -> set[str]:
    folder = data_dir / "datasets"
    return {p.name for p in folder.iterdir()} if folder.exists() else set()

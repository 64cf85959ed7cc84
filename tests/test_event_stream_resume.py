"""A client that drops mid-run and reconnects with Last-Event-ID misses nothing and sees nothing twice."""
from __future__ import annotations

import pytest

from tests.helpers.api import job_body, read_events

pytestmark = pytest.mark.integration


def test_a_reconnect_during_the_run_continues_exactly_where_it_left_off(stack) -> None:
    with stack.client() as client:
        job_id = client.post("/api/v1/jobs", json=job_body(hyperparameters={"max_steps": 20})).json()["id"]
        first = read_events(client, job_id, limit=6)
        assert [e["id"] for e in first] == list(range(1, 7))
        rest = read_events(client, job_id, last_event_id=first[-1]["id"])
        full = read_events(client, job_id)
    assert first + rest == full
    assert full[-1]["data"]["status"] == "succeeded"
    assert [e["id"] for e in full] == list(range(1, len(full) + 1))


def test_a_query_parameter_works_for_clients_that_cannot_set_headers(stack) -> None:
    with stack.client() as client:
        job_id = client.post("/api/v1/jobs", json=job_body(hyperparameters={"max_steps": 3})).json()["id"]
        full = read_events(client, job_id)
        with client.stream("GET", f"/api/v1/jobs/{job_id}/events", params={"after": full[-3]["id"]}) as response:
            ids = [int(line[4:]) for line in response.iter_lines() if line.startswith("id: ")]
    assert ids == [e["id"] for e in full[-2:]]

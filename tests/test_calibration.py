"""Issue 14, acceptance 6: the catalog shows finished jobs' predicted against measured figures per GPU and
method, and calibrating a GPU from its runs moves its plans toward what the runs measured.

The jobs are rows of the real (migrated) database, written as the worker writes a finished job: the plan
from `job_plan` at submission, then the trainer's summary event (worker/train/events.summary: its
`peak_memory_bytes` is torch.cuda.max_memory_allocated on a GPU, RSS on the CPU; `accelerator` the device
it ran on) into `Job.summary`, and `Job.peak_memory_bytes`, as worker/runner.py stores them.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
from pydantic import TypeAdapter
from sqlmodel import Session, select

from app.models import CatalogGpu, Job, JobStatus, utcnow
from app.planner.calibration import MIN_RUNS, TENSOR_RATIO_BOUNDS, match_gpu, measured_runs, propose
from app.planner.catalog import load_catalog
from app.planner.db_catalog import DbCatalog
from app.planner.estimate import calibrated_peak
from app.planner.job_plan import job_plan
from app.schemas.jobs import JobCreate
from tests.helpers.api import job_body
from tests.helpers.local_api import LocalApi

pytestmark = pytest.mark.integration

BODY = job_body(hyperparameters={"max_steps": 40, "batch_size": 8, "seq_len": 128})
STEPS = 10_000  # priced over many steps, so that seconds are not rounded away


def _plan_request() -> dict:
    """The plan API's request for exactly what the jobs below ran (their settings, on a GPU: bf16)."""
    body = TypeAdapter(JobCreate).validate_python(BODY)
    hp = body.hyperparameters
    return {"model": body.model, "methods": [body.method], "seq_len": hp.seq_len, "batch_size": hp.batch_size,
            "gradient_accumulation": hp.gradient_accumulation, "gradient_checkpointing": hp.gradient_checkpointing,
            "precision": "bf16", "method_config": {body.method: body.method_config.model_dump(mode="json")},
            "dataset_tokens": STEPS * hp.batch_size * hp.seq_len * hp.gradient_accumulation}


def _session() -> Session:
    from app.db import get_engine

    return Session(get_engine())


def _finished_job(session: Session, device: str, queue: str, peak_scale: float, speed_scale: float,
                  method_body: dict | None = None) -> Job:
    """A job as the worker leaves it: plan at submission, the trainer's summary, the peak column."""
    body = TypeAdapter(JobCreate).validate_python(method_body or BODY)
    plan = job_plan(session, body, on_gpu=queue != "cpu")
    l4 = next(g for g in plan["gpus"] if g["name"] == "L4")
    peak = int(plan["tensor_peak_bytes"] * peak_scale)
    tps = l4["tokens_per_second"] * speed_scale
    summary = {"trainable_params": plan["trainable_params"], "total_params": plan["total_params"],
               "trainable_percent": 100.0 * plan["trainable_params"] / plan["total_params"],
               "peak_memory_bytes": peak, "final_loss": 1.5, "tokens_per_second": tps, "steps": 40,
               "artifact_dir": "/x/artifact", "merged_dir": None, "accelerator": device}
    now = utcnow()
    job = Job(model=body.model, dataset_id=body.dataset, method=body.method, name=f"{device} {peak_scale}",
              config=body.model_dump(mode="json"), queue=queue, status=JobStatus.SUCCEEDED, step=40, total_steps=40,
              summary=summary, peak_memory_bytes=peak, plan=plan, attempt=1, worker="celery@gpu-host",
              started_at=now - timedelta(minutes=3), finished_at=now)
    session.add(job)
    session.commit()
    return job


@pytest.fixture
def clean_runs(api: LocalApi) -> Iterator[LocalApi]:
    """Each test starts with no finished jobs and no calibration (the module shares one database)."""
    def wipe() -> None:
        with _session() as session:
            for job in session.exec(select(Job)):
                session.delete(job)
            for gpu in session.exec(select(CatalogGpu)):
                gpu.calibration = {}
                session.add(gpu)
            session.commit()
    wipe()
    yield api
    wipe()


def _l4_row(api: LocalApi) -> tuple[dict, list[str]]:
    answer = api.client.post("/api/v1/plan", json={**_plan_request(), "gpus": ["L4"]})
    assert answer.status_code == 200, answer.text
    estimate = answer.json()["estimates"][0]
    return estimate["gpus"][0], estimate["notes"]


def test_the_calibration_view_shows_predicted_against_measured_per_gpu_and_method(clean_runs: LocalApi) -> None:
    with _session() as session:
        for scale in (1.10, 1.20, 1.30):
            _finished_job(session, "NVIDIA L4", "gpu-24", scale, 0.5)
        _finished_job(session, "CPU", "cpu", 3.0, 1.0)
    page = clean_runs.client.get("/plan/catalog/calibration")
    assert page.status_code == 200
    l4 = re.search(r'<tr data-device="NVIDIA L4" data-method="lora" data-runs="3"\s+data-peak-ratio="([0-9.]+)"'
                   r'\s+data-throughput-ratio="([0-9.]+)"', page.text)
    assert l4 is not None, page.text
    assert float(l4.group(1)) == pytest.approx(1.20, abs=0.01) and float(l4.group(2)) == pytest.approx(0.5, abs=0.01)
    assert "catalog: L4" in page.text and 'data-runs="1"' in page.text and "RSS against tensors" in page.text
    assert "Calibrate from 3 runs" in page.text  # the admin's action
    catalog_page = clean_runs.client.get("/plan/catalog")
    assert 'hx-get="/plan/catalog/calibration"' in catalog_page.text


def _l4_prediction(session: Session) -> tuple[float, float]:
    """What the planner now predicts for the same job on an L4: tensors allocated (the device peak it
    fits against, less the CUDA context and slack) and tokens/s, from a fresh `job_plan` of it."""
    catalog = DbCatalog(session)
    plan = job_plan(session, TypeAdapter(JobCreate).validate_python(BODY), on_gpu=True)
    runtime, l4 = catalog.runtime, catalog.gpu("L4")
    assert l4 is not None
    device_peak = calibrated_peak(plan["peak_bytes"], runtime, l4)
    tensors = (device_peak - runtime.cuda_context_bytes) / (1 + runtime.allocator_slack)
    return tensors, next(g["tokens_per_second"] for g in plan["gpus"] if g["name"] == "L4")


def test_calibrating_a_gpu_moves_its_plan_toward_the_measured_runs(clean_runs: LocalApi) -> None:
    before_row, before_notes = _l4_row(clean_runs)
    with _session() as session:
        before = _l4_prediction(session)
        jobs = [_finished_job(session, "NVIDIA L4", "gpu-24", scale, 0.5) for scale in (1.15, 1.20, 1.25)]
        measured = (jobs[1].peak_memory_bytes, jobs[1].summary["tokens_per_second"])
    saved = clean_runs.client.post("/plan/catalog/calibration/l4", follow_redirects=False)
    assert saved.status_code == 303
    with _session() as session:
        after = _l4_prediction(session)
    for was, now, truth in zip(before, after, measured):
        assert abs(now - truth) < 0.02 * truth < abs(was - truth), (was, now, truth)
    after_row, after_notes = _l4_row(clean_runs)  # the plan API: the same GPU's row moves too, and says why
    assert after_row["headroom_bytes"] < before_row["headroom_bytes"] and after_row["seconds"] > before_row["seconds"]
    assert not any("calibrated" in note for note in before_notes)
    assert any(note.startswith("L4: calibrated") and "from 3 measured runs" in note and "3 measured lora runs" in note
               for note in after_notes), after_notes
    assert 'data-calibrated="yes"' in clean_runs.client.get("/plan/catalog").text
    table = clean_runs.client.post("/plan/table", data={"model": "demo", "gpus": ["L4"], "seq_len": "128"})
    assert table.status_code == 200 and 'class="hint calibrated" title="L4: calibrated' in table.text


def test_a_gpu_with_fewer_runs_than_the_rule_needs_is_not_calibrated(clean_runs: LocalApi) -> None:
    with _session() as session:
        for _ in range(MIN_RUNS - 1):
            _finished_job(session, "NVIDIA L4", "gpu-24", 1.2, 0.5)
    refused = clean_runs.client.post("/plan/catalog/calibration/l4", follow_redirects=False)
    assert refused.status_code == 422 and f"fewer than {MIN_RUNS} finished runs" in refused.text
    with _session() as session:
        assert session.get(CatalogGpu, "l4").calibration == {}  # type: ignore[union-attr]


def test_an_outlying_ratio_is_clamped_and_clearing_restores_the_seeded_figures(clean_runs: LocalApi) -> None:
    with _session() as session:
        for _ in range(MIN_RUNS):
            _finished_job(session, "NVIDIA L4", "gpu-24", 9.0, 1.0)
    assert clean_runs.client.post("/plan/catalog/calibration/l4", follow_redirects=False).status_code == 303
    with _session() as session:
        assert session.get(CatalogGpu, "l4").calibration["tensor_ratio"] == TENSOR_RATIO_BOUNDS[1]  # type: ignore[union-attr]
    assert clean_runs.client.post("/plan/catalog/calibration/l4/clear", follow_redirects=False).status_code == 303
    row, notes = _l4_row(clean_runs)
    assert not any("calibrated" in note for note in notes)


def test_cpu_runs_measure_rss_and_never_calibrate_memory(clean_runs: LocalApi) -> None:
    with _session() as session:
        for _ in range(MIN_RUNS + 1):
            _finished_job(session, "CPU", "cpu", 2.5, 1.0)
        runs = measured_runs(session, load_catalog().gpus())
    assert {r.peak_kind for r in runs} == {"process_rss"} and all(r.gpu is None for r in runs)
    assert all(propose(gpu, runs) is None for gpu in load_catalog().gpus())


@pytest.mark.parametrize(("device", "catalog_name"), [
    ("NVIDIA A100-SXM4-80GB", "A100 80GB"), ("NVIDIA A100-SXM4-40GB", "A100 40GB"),
    ("NVIDIA GeForce RTX 4090", "RTX 4090"), ("NVIDIA H100 80GB HBM3", "H100 80GB"), ("NVIDIA L40S", "L40S"),
    ("NVIDIA L40", "L40"), ("NVIDIA L4", "L4"), ("Tesla T4", "T4 16GB"), ("NVIDIA GeForce RTX 5090", "RTX 5090 32GB"),
    ("NVIDIA H20", "H20"), ("NVIDIA H200", "H200"), ("NVIDIA B200", "B200"), ("AMD Instinct MI300X", "MI300X"),
    ("NVIDIA A100-PCIE", None), ("Quadro P1000", None),
])
def test_a_device_name_as_torch_reports_it_finds_its_catalog_gpu(device: str, catalog_name: str | None) -> None:
    gpu = match_gpu(device, load_catalog().gpus())
    assert (gpu.name if gpu else None) == catalog_name


def test_only_an_admin_calibrates_but_everyone_sees_the_history(clean_runs: LocalApi) -> None:
    from app.auth.users import create_token, create_user

    with _session() as session:
        for _ in range(MIN_RUNS):
            _finished_job(session, "NVIDIA L4", "gpu-24", 1.2, 0.5)
        _, token = create_token(session, create_user(session, "calibration-erin@example.com", "password of erin"))
    user = clean_runs.client_with(token)
    page = user.get("/plan/catalog/calibration")
    assert page.status_code == 200 and 'data-device="NVIDIA L4"' in page.text and "Calibrate from" not in page.text
    assert user.post("/plan/catalog/calibration/l4", follow_redirects=False).status_code == 403
    with _session() as session:
        assert session.get(CatalogGpu, "l4").calibration == {}  # type: ignore[union-attr]

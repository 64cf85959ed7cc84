"""Job rows: create, read, cancel. Routes stay thin; the rules live here."""
from __future__ import annotations

from typing import Any

from sqlalchemy import func, update
from sqlmodel import Session, select

from app.auth.visibility import can_see
from app.datasets.seq_len_check import seq_len_refusal
from app.catalog.models import ModelNotFound, get_model
from app.dispatch import enqueue_job
from app.events.store import append_events
from app.jobs.artifacts import available_downloads
from app.methods import METHODS, MethodError, check_against, check_seq_len, get_spec, missing_requirements
from app.events.kinds import EventKind
from app.webhooks.outbox import record_job_end
from app.models import TERMINAL_STATUSES, Dataset, Job, JobStatus, User, utcnow
from app.planner.architecture import Architecture, ArchitectureError
from app.planner.job_plan import job_plan
from app.prompts import PromptFormatError, resolve_format
from app.prompts.tokenizer import chat_template_of, model_folder
from app.queue import MEMORY_CLASSES
from app.routing import NoClassFits, job_queue, live_served_queues
from app.schemas.jobs import JobPublic, MethodJobCreate, Progress
from app.settings import get_settings


class FieldError(ValueError):
    """A request field that is well-formed but wrong for this model or dataset."""

    def __init__(self, loc: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


def check_combination(body: MethodJobCreate) -> None:
    """Refuse what the libraries cannot do, saying why and what to pick instead."""
    spec = get_spec(body.method)
    if spec.no_checkpointing is not None and body.hyperparameters.gradient_checkpointing:
        raise FieldError(("hyperparameters", "gradient_checkpointing"), spec.no_checkpointing)
    if spec.no_padding_free is not None and body.hyperparameters.batching == "padding_free":
        raise FieldError(("hyperparameters", "batching"), spec.no_padding_free)
    if body.hyperparameters.objective == "dpo" and spec.dpo_reference is None:
        usable = ", ".join(m for m in METHODS if get_spec(m).dpo_reference is not None)
        raise FieldError(("hyperparameters", "objective"), f"{spec.label} does not take the dpo objective; "
                                                           f"use one of {usable}")
    if body.hyperparameters.objective == "dpo" and body.hyperparameters.batching == "padding_free":
        raise FieldError(("hyperparameters", "batching"), "dpo batches each pair's two answers side by side; "
                                                          "use batching grouped or padded")
    if missing := missing_requirements(body.method):
        raise FieldError(("method",), f"{spec.label} needs {', '.join(missing)}, which is not installed here; "
                                      "use LoRA instead")


def _check_objective_data(objective: str, fmt: str, field: str) -> None:
    """DPO learns from preference pairs and nothing else; supervised training cannot use them."""
    if objective == "dpo" and fmt != "preference":
        raise FieldError((field,), f"objective dpo needs preference pairs (prompt, chosen, rejected); this dataset's "
                                   f"rows are {fmt}")
    if objective != "dpo" and fmt == "preference":
        raise FieldError((field,), "this dataset holds preference pairs: train on it with hyperparameters.objective "
                                   "dpo")


def check_against_model(body: MethodJobCreate) -> None:
    """The model's limits and the method's one check against its architecture (the planner's too)."""
    try:
        info = get_model(body.model)
    except ModelNotFound as exc:
        raise FieldError(("model",), str(exc)) from exc
    try:
        arch = Architecture.from_config(info.config)
    except ArchitectureError:
        return  # a config the planner cannot read: the job's plan says why (app.planner.job_plan)
    seq_len = body.hyperparameters.seq_len
    if (too_long := check_seq_len(arch, seq_len)) is not None:
        raise FieldError(("hyperparameters", "seq_len"), too_long)
    try:
        check_against(body.method, body.method_config, arch, seq_len)
    except MethodError as exc:
        raise FieldError(("method_config", exc.field), exc.message) from exc


def resolve_prompt_format(body: MethodJobCreate) -> None:
    """Store the prompt format the job will train with: the one asked for, else the model's chat template
    when its tokenizer has one, else alpaca. A hub model's files are not read here: the trainer resolves it."""
    folder = model_folder(body.model)
    if folder is None:
        return
    try:
        body.hyperparameters.prompt_format = resolve_format(  # type: ignore[assignment]
            body.hyperparameters.prompt_format, chat_template_of(folder))
    except PromptFormatError as exc:
        raise FieldError(("hyperparameters", "prompt_format"), str(exc)) from exc


def _plan_and_queue(session: Session, body: MethodJobCreate) -> tuple[dict[str, Any], str]:
    """The job's instant plan and its queue: the smallest GPU class the planned peak fits, or `cpu`
    where no live worker serves a GPU class (app.routing)."""
    served = live_served_queues(get_settings().resolved_redis_url)
    on_gpu = any(name in MEMORY_CLASSES for name in served)
    plan = job_plan(session, body, on_gpu=on_gpu)
    if body.hyperparameters.precision is None and plan.get("precision"):
        # The worker runs what was priced: unset means bf16 weights where GPUs serve, fp32 on the CPU.
        body.hyperparameters.precision = plan["precision"]
    peak = plan.get("peak_bytes")
    try:
        return plan, job_queue(int(peak) if isinstance(peak, (int, float)) else None, served)
    except NoClassFits as exc:
        raise FieldError(("method",), str(exc)) from exc


def create_job(session: Session, body: MethodJobCreate, owner: User) -> Job:
    check_combination(body)
    dataset = session.get(Dataset, body.dataset)
    if dataset is None or not can_see(owner, dataset.owner_id):
        raise FieldError(("dataset",), f"no dataset with id {body.dataset!r}")
    _check_objective_data(body.hyperparameters.objective, dataset.format, "dataset")
    if body.validation_dataset is not None:
        held = session.get(Dataset, body.validation_dataset)
        if held is None or not can_see(owner, held.owner_id):
            raise FieldError(("validation_dataset",), f"no dataset with id {body.validation_dataset!r}")
        _check_objective_data(body.hyperparameters.objective, held.format, "validation_dataset")
        if held.format != dataset.format:
            raise FieldError(("validation_dataset",), f"its rows are {held.format}, the training rows "
                                                      f"{dataset.format}: evaluate on rows of the same format")
    eval_count = body.hyperparameters.eval_count
    if eval_count is not None and eval_count >= dataset.rows:
        raise FieldError(
            ("hyperparameters", "eval_count"),
            f"eval_count {eval_count} leaves no rows to train on: the dataset has {dataset.rows} rows; "
            "hold out fewer (or give eval_fraction)",
        )
    hp = body.hyperparameters
    if hp.epochs is not None and hp.warmup_steps > (steps := hp.total_steps(dataset.rows)):
        raise FieldError(("hyperparameters", "warmup_steps"), f"warmup_steps {hp.warmup_steps} is longer than the "
                                                              f"run's {steps} steps ({hp.epochs} epochs of "
                                                              f"{dataset.rows} rows): the learning rate would never "
                                                              "reach its peak")
    check_against_model(body)
    resolve_prompt_format(body)
    hp = body.hyperparameters
    if (too_short := seq_len_refusal(session, body.dataset, body.model, hp.seq_len, hp.prompt_format)) is not None:
        raise FieldError(("hyperparameters", "seq_len"), too_short)
    plan, queue = _plan_and_queue(session, body)
    config = body.model_dump(mode="json")
    job = Job(
        owner_id=owner.id,
        name=body.name or f"{body.method} on {body.model}",
        model=body.model,
        dataset_id=body.dataset,
        method=body.method,
        config=config,
        queue=queue,
        total_steps=body.hyperparameters.max_steps or 0,
        plan=plan,
    )
    session.add(job)
    session.flush()
    append_events(session, job.id, [(EventKind.STATUS, {"status": JobStatus.QUEUED})])
    session.commit()
    session.refresh(job)
    enqueue_job(job.id, job.queue, session)
    return job


def list_jobs(
    session: Session, user: User, *, status: str | None = None, method: str | None = None,
    search: str | None = None, offset: int = 0, limit: int = 50,
) -> tuple[list[Job], int]:
    conditions = [] if user.is_admin else [Job.owner_id == user.id]
    if status:
        conditions.append(Job.status == status)
    if method:
        conditions.append(Job.method == method)
    if search:
        conditions.append(Job.name.contains(search))  # type: ignore[attr-defined]
    count = session.exec(select(func.count()).select_from(Job).where(*conditions)).one()
    stmt = select(Job).where(*conditions).order_by(Job.created_at.desc()).offset(offset).limit(limit)  # type: ignore[attr-defined]
    return list(session.exec(stmt)), int(count)


def cancel_job(session: Session, job: Job) -> Job:
    """A queued or paused job is cancelled on the spot; a running one is asked to stop at its next step."""
    return _stop(session, job, pause=False)


def pause_job(session: Session, job: Job) -> Job:
    """Stop at a checkpoint and wait to be resumed: a queued job is paused on the spot (it never started);
    a running one finishes its step, saves a checkpoint and ends `paused` (a cancel's stop, another end)."""
    return _stop(session, job, pause=True)


def _stop(session: Session, job: Job, *, pause: bool) -> Job:
    if job.status in TERMINAL_STATUSES or (pause and job.status in (JobStatus.PAUSED, JobStatus.PAUSING)):
        return job
    waiting = (JobStatus.QUEUED,) if pause else (JobStatus.QUEUED, JobStatus.PAUSED)
    at_once = JobStatus.PAUSED if pause else JobStatus.CANCELLED
    stopped = session.exec(  # type: ignore[call-overload]
        update(Job).where(Job.id == job.id, Job.status.in_(waiting))  # type: ignore[attr-defined]
        .values(status=at_once, cancel_requested=True, pause_requested=pause,
                finished_at=None if pause else utcnow())
    )
    if stopped.rowcount == 1:
        record_job_end(session, job.id, at_once)  # webhooks, in the transaction that ends the job
        session.commit()
        append_events(session, job.id, [(EventKind.STATUS, {"status": at_once})])
        session.commit()
    else:
        session.exec(  # type: ignore[call-overload]
            update(Job).where(Job.id == job.id, Job.status.in_((JobStatus.RUNNING, JobStatus.PAUSING)))  # type: ignore[attr-defined]
            .values(status=JobStatus.PAUSING if pause else JobStatus.CANCELLING, cancel_requested=True,
                    pause_requested=pause)
        )
        session.commit()
    session.refresh(job)
    return job


RETRYABLE = frozenset({JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.PAUSED})


def retry_job(session: Session, job: Job, *, fresh: bool = False) -> Job | None:
    """Queue a failed, cancelled or paused job again; it resumes from its last checkpoint unless `fresh`.

    None when the job is not in a state that can be retried (the caller answers 409).
    """
    changed = session.exec(  # type: ignore[call-overload]
        update(Job).where(Job.id == job.id, Job.status.in_(RETRYABLE))  # type: ignore[attr-defined]
        .values(status=JobStatus.QUEUED, cancel_requested=False, pause_requested=False, error=None,
                finished_at=None, resume=not fresh)
    )
    if changed.rowcount != 1:
        session.rollback()
        return None
    session.refresh(job)
    append_events(session, job.id, [(EventKind.STATUS, {"status": JobStatus.QUEUED, "retry": True, "resume": not fresh})])
    session.commit()
    session.refresh(job)
    enqueue_job(job.id, job.queue, session)
    return job


def downloads(job: Job) -> dict[str, str]:
    return available_downloads(job)


def to_public(job: Job) -> JobPublic:
    config: dict[str, Any] = job.config
    return JobPublic(
        id=job.id, name=job.name, status=job.status, model=job.model, dataset=job.dataset_id,
        method=job.method, queue=job.queue,
        hyperparameters=config.get("hyperparameters", {}), method_config=config.get("method_config", {}),
        progress=Progress(step=job.step, total=job.total_steps), metrics=job.metrics, summary=job.summary,
        error=job.error, attempt=job.attempt, worker=job.worker, peak_memory_bytes=job.peak_memory_bytes,
        created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
        downloads=downloads(job), plan=job.plan,
    )

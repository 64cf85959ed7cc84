"""Event kinds, by name (StrEnums: each equal to its string, so stored rows and JSON are unchanged)."""
from __future__ import annotations

from enum import StrEnum


class EventKind(StrEnum):
    """A job's events: `status`, `log` and `metric` are stored (job_event.kind), put on the job's
    Redis stream and sent on its SSE streams. `summary` and `error` come only from the training
    subprocess's event lines (worker/train/events.py): the worker folds them into the job row
    and a log line."""

    STATUS = "status"
    LOG = "log"
    METRIC = "metric"
    SUMMARY = "summary"
    ERROR = "error"


class PageEvent(StrEnum):
    """SSE events only the job page's stream sends (htmx swaps, the chart glue), beside log, metric, status."""

    SAMPLE = "sample"
    CHECKPOINT = "checkpoint"
    PROGRESS = "progress"
    TIMELINE = "timeline"
    END = "end"

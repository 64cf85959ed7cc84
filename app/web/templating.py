"""Jinja2 environment for pages and fragments; autoescape is on for every template."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from fastapi.templating import Jinja2Templates

from app.auth.csrf import csrf_token
from app.models import as_utc

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "templates"

templates = Jinja2Templates(directory=TEMPLATES_DIR)


def human_bytes(value: int | None) -> str:
    if value is None:
        return "—"
    size = float(value)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def human_time(value: datetime | None) -> str:
    """Stored times are UTC (SQLite gives them back naive): shown with their zone, never as local time."""
    return as_utc(value).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


def duration(start: datetime | None, end: datetime | None) -> str:
    if start is None:
        return "—"
    end = end or datetime.now(timezone.utc)
    seconds = int((as_utc(end) - as_utc(start)).total_seconds())
    minutes, seconds = divmod(max(seconds, 0), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {seconds:02d}s"


templates.env.globals["csrf_token"] = csrf_token
templates.env.filters["bytes"] = human_bytes
templates.env.filters["when"] = human_time
templates.env.globals["duration"] = duration

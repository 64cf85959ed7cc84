"""Dataset bodies."""
from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class DatasetPublic(BaseModel):
    id: str
    name: str
    rows: int
    format: str
    size_bytes: int
    created_at: datetime


class DatasetsPublic(BaseModel):
    data: list[DatasetPublic]
    count: int


class LineError(BaseModel):
    line: int
    error: str


class FieldIssue(BaseModel):
    """FastAPI's own shape, for a request that is malformed before the file is read."""

    loc: list[str | int]
    msg: str
    type: str


class UploadRejected(BaseModel):
    """422 of an upload: one item per bad line (or per malformed request field)."""

    detail: list[LineError | FieldIssue]

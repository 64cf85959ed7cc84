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

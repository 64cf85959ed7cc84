"""Stream an uploaded file line by line into normalised JSONL.

Memory stays bounded (one line at a time) and every problem is reported with
its line number, so a user fixes the file once instead of once per error.
"""
from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from app.datasets.formats import RowError, detect_format, normalise_row

MAX_REPORTED_ERRORS = 50


@dataclass
class ValidationReport:
    format: str | None = None
    rows: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def add_error(self, line: int, message: str) -> None:
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append({"line": line, "error": message})

    @property
    def ok(self) -> bool:
        return not self.errors and self.rows > 0


def _decoded_lines(raw: IO[bytes], report: ValidationReport) -> Iterator[tuple[int, str]]:
    for number, data in enumerate(raw, start=1):
        if number == 1 and data.startswith(b"\xef\xbb\xbf"):
            data = data[3:]
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            report.add_error(number, f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at column {exc.start + 1})")
            continue
        yield number, text.rstrip("\r\n")


def _check_row(number: int, row: Any, report: ValidationReport) -> dict[str, Any] | None:
    try:
        if report.format is None:
            if not isinstance(row, dict):
                raise RowError(f"expected a JSON object, got {type(row).__name__}")
            fmt = detect_format(row)
        else:
            fmt = report.format
        clean = normalise_row(row, fmt)
    except RowError as exc:
        report.add_error(number, str(exc))
        return None
    report.format = fmt
    report.rows += 1
    return clean


def _jsonl_rows(raw: IO[bytes], report: ValidationReport) -> Iterator[dict[str, Any]]:
    for number, text in _decoded_lines(raw, report):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            report.add_error(number, f"invalid JSON: {exc.msg} at column {exc.colno}")
            continue
        clean = _check_row(number, row, report)
        if clean is not None:
            yield clean


def _csv_rows(raw: IO[bytes], report: ValidationReport) -> Iterator[dict[str, Any]]:
    lines = _decoded_lines(raw, report)
    numbered: list[int] = [0]

    def text_lines() -> Iterable[str]:
        for number, text in lines:
            numbered[0] = number
            yield text

    reader = csv.DictReader(text_lines())
    try:
        for row in reader:
            number = numbered[0]
            if None in row:
                report.add_error(number, "more values than header columns")
                continue
            if any(value is None for value in row.values()):
                report.add_error(number, "fewer values than header columns")
                continue
            clean = _check_row(number, dict(row), report)
            if clean is not None:
                yield clean
    except csv.Error as exc:
        report.add_error(numbered[0], f"invalid CSV: {exc}")


def normalise(raw: IO[bytes], kind: str, out: IO[str]) -> ValidationReport:
    """Validate `raw` (jsonl or csv) and write the clean rows to `out`, one JSON object a line."""
    report = ValidationReport()
    rows = _csv_rows(raw, report) if kind == "csv" else _jsonl_rows(raw, report)
    for clean in rows:
        out.write(json.dumps(clean, ensure_ascii=False) + "\n")
    if report.rows == 0 and not report.errors:
        report.add_error(1, "the file is empty: no rows to train on")
    return report

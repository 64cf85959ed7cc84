"""`/v1/files`: OpenAI's Files API over our datasets (a file uploaded here is a dataset, and the reverse).

The same validation as `POST /api/v1/datasets` (line-numbered errors, nothing stored for a refused
file), the same storage and ownership. Only `purpose="fine-tune"` is taken. `content` returns the
rows as stored: normalised JSONL, one object a line (a CSV upload comes back as JSONL).
"""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import FileResponse
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from app import storage
from app.api.deps import CurrentUser, SessionDep
from app.auth.visibility import can_see
from app.datasets.crud import DatasetInUse, DatasetRejected, create_dataset, delete_dataset, kind_of, \
    list_datasets, safe_display_name
from app.models import Dataset, User
from app.openai_compat.errors import OpenAIError
from app.settings import get_settings

router = APIRouter(prefix="/files", tags=["openai"])
MAX_LISTED = 10_000


def file_object(dataset: Dataset) -> dict[str, Any]:
    return {"id": dataset.id, "object": "file", "bytes": dataset.size_bytes,
            "created_at": int(dataset.created_at.timestamp()), "filename": dataset.name, "purpose": "fine-tune",
            "status": "processed", "status_details": None, "expires_at": None}


def visible_file(session: Session, user: User, file_id: str, param: str = "file_id") -> Dataset:
    dataset = session.get(Dataset, file_id) if len(file_id) <= 64 else None
    if dataset is None or not can_see(user, dataset.owner_id):
        raise OpenAIError(404, f"No such File object: {file_id}", param=param, code="file_not_found")
    return dataset


def _rejection(errors: list[dict[str, Any]]) -> OpenAIError:
    lines = "; ".join(f"line {e['line']}: {e['error']}" for e in errors[:10])
    more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
    return OpenAIError(400, f"Invalid file: {lines}{more}. Nothing was stored.", param="file",
                       code="invalid_file_format")


@router.post("")
async def upload_file(session: SessionDep, user: CurrentUser, file: Annotated[UploadFile, File()],
                      purpose: Annotated[str, Form()]) -> dict[str, Any]:
    """A training or validation file: JSONL (or CSV) rows in one of the dataset formats."""
    if purpose != "fine-tune":
        raise OpenAIError(400, f"purpose {purpose!r} is not supported here: upload training data with "
                               "purpose 'fine-tune'", param="purpose", code="invalid_value")
    kind = kind_of(file.filename, file.content_type) or "jsonl"
    limit = get_settings().max_upload_mb
    if file.size is not None and file.size > limit * 1024 * 1024:
        raise OpenAIError(413, f"the file is larger than the {limit} MB limit (TUNEDECK_MAX_UPLOAD_MB)", param="file")
    try:
        dataset = await run_in_threadpool(create_dataset, session, file.file, kind,
                                          safe_display_name(file.filename), None, user.id)
    except DatasetRejected as exc:
        raise _rejection(exc.errors) from None
    return file_object(dataset)


@router.get("")
def list_files(session: SessionDep, user: CurrentUser, purpose: str | None = None,
               limit: Annotated[int, Query(ge=1, le=MAX_LISTED)] = MAX_LISTED, after: str | None = None,
               order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc") -> dict[str, Any]:
    rows = [] if purpose not in (None, "fine-tune") else list_datasets(session, user)
    if order == "asc":
        rows.reverse()
    if after is not None:
        ids = [d.id for d in rows]
        rows = rows[ids.index(after) + 1:] if after in ids else []
    page = rows[:limit]
    return {"object": "list", "data": [file_object(d) for d in page], "has_more": len(rows) > limit,
            "first_id": page[0].id if page else None, "last_id": page[-1].id if page else None}


@router.get("/{file_id}")
def get_file(file_id: str, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    return file_object(visible_file(session, user, file_id))


@router.get("/{file_id}/content", response_class=FileResponse)
def file_content(file_id: str, session: SessionDep, user: CurrentUser) -> FileResponse:
    dataset = visible_file(session, user, file_id)
    return FileResponse(storage.absolute(dataset.path), media_type="application/jsonl",
                        filename=dataset.name if dataset.name.endswith(".jsonl") else f"{dataset.name}.jsonl")


@router.delete("/{file_id}")
def remove_file(file_id: str, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    dataset = visible_file(session, user, file_id)
    if dataset.owner_id is None and not user.is_admin:
        raise OpenAIError(403, f"{file_id} is a built-in dataset: only an admin may delete it", param="file_id")
    try:
        delete_dataset(session, dataset)
    except DatasetInUse as exc:
        raise OpenAIError(409, str(exc), param="file_id", code="file_in_use") from None
    return {"id": file_id, "object": "file", "deleted": True}

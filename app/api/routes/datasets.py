"""Dataset upload and listing."""
from __future__ import annotations

from fastapi import APIRouter, HTTPException, UploadFile, status
from starlette.concurrency import run_in_threadpool

from app.api.deps import CurrentUser, SessionDep
from app.datasets.crud import DatasetRejected, create_dataset, kind_of, list_datasets, safe_display_name
from app.schemas.datasets import DatasetPublic, DatasetsPublic, UploadRejected
from app.settings import get_settings

router = APIRouter(prefix="/datasets", tags=["datasets"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=DatasetPublic,
             responses={422: {"model": UploadRejected, "description": "The file was not stored: what is wrong, by line"},
                        413: {"description": "Larger than TUNEDECK_MAX_UPLOAD_MB"}})
async def upload_dataset(file: UploadFile, session: SessionDep, user: CurrentUser) -> DatasetPublic:
    """Validate a JSONL or CSV file line by line and store it; a bad file stores nothing."""
    kind = kind_of(file.filename, file.content_type)
    if kind is None:
        raise HTTPException(422, detail=[{"line": 0, "error": "upload a .jsonl or .csv file"}])
    limit = get_settings().max_upload_mb * 1024 * 1024
    if file.size is not None and file.size > limit:
        raise HTTPException(413, detail=f"file is larger than the {get_settings().max_upload_mb} MB limit")
    try:
        dataset = await run_in_threadpool(
            create_dataset, session, file.file, kind, safe_display_name(file.filename), None, user.id
        )
    except DatasetRejected as exc:
        raise HTTPException(422, detail=exc.errors) from exc
    return DatasetPublic.model_validate(dataset, from_attributes=True)


@router.get("", response_model=DatasetsPublic)
def get_datasets(session: SessionDep, user: CurrentUser) -> DatasetsPublic:
    """Every stored dataset, newest first."""
    rows = list_datasets(session, user)
    return DatasetsPublic(data=[DatasetPublic.model_validate(r, from_attributes=True) for r in rows], count=len(rows))

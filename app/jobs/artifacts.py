"""A job's downloadable folders, zipped once and kept beside them.

Paths come from the job id and the database, never from the URL; the final
realpath check keeps a planted symlink from serving anything outside the job.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

from app import storage
from app.models import Job, JobStatus

ARTIFACT_KINDS = ("adapter", "merged")


def artifact_folder(job: Job, kind: str) -> Path | None:
    """The folder behind a download, if the job has it (only succeeded jobs have any)."""
    if job.status != JobStatus.SUCCEEDED or not job.artifact_path:
        return None
    job_root = storage.inside_data_dir(storage.job_dir(job.id))
    if job_root is None:
        return None
    candidate = storage.absolute(job.artifact_path) if kind == "adapter" else job_root / kind
    folder = storage.inside_data_dir(candidate)
    if folder is None or not folder.is_dir() or job_root not in folder.parents:
        return None
    return folder


def available_downloads(job: Job) -> dict[str, str]:
    return {kind: f"/api/v1/jobs/{job.id}/{kind}" for kind in ARTIFACT_KINDS if artifact_folder(job, kind)}


def artifact_zip(job: Job, kind: str) -> Path | None:
    folder = artifact_folder(job, kind)
    if folder is None:
        return None
    return zip_folder(folder, folder.parent / f"{kind}.zip")


def zip_folder(folder: Path, target: Path) -> Path:
    """Zip `folder` into `target` once (rebuilt when the folder is newer); regular files only."""
    if target.is_file() and target.stat().st_mtime >= folder.stat().st_mtime:
        return target
    # Owner-only (0600), as the API has always kept its zips.
    with storage.atomic_file(target, "wb", permissions=0o600) as raw, \
            zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink():
                archive.write(path, path.relative_to(folder).as_posix())
    return target

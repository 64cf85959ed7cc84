"""Zipped downloads of a job's artifacts, built once and kept beside them."""
from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

from app import storage
from app.models import Job


def adapter_zip(job: Job) -> Path | None:
    if not job.artifact_path:
        return None
    folder = storage.inside_data_dir(storage.absolute(job.artifact_path))
    job_root = storage.inside_data_dir(storage.job_dir(job.id))
    if folder is None or job_root is None or not folder.is_dir() or job_root not in folder.parents:
        return None
    target = job_root / "adapter.zip"
    if target.is_file():
        return target
    fd, tmp = tempfile.mkstemp(prefix=".zip-", dir=job_root)
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(folder.rglob("*")):
                if path.is_file() and not path.is_symlink():
                    archive.write(path, path.relative_to(folder).as_posix())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target

"""Where files live under the data directory, and the one way to write them atomically.

Every path handed out is built from ids the database issued, never from text
a user typed; `inside_data_dir` is the last line of defence on the way out.

`atomic_file` / `atomic_write_bytes` and `atomic_folder` are the only
writers of files and folders that a reader may look at while they are being
written: the content goes to a temp sibling, is fsynced (file(s) and
folder), and is renamed into place, so a reader (or a crash) sees the old
version or the new one, never half of one. Pure Python: the web app and the
trainer both use them.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from app.settings import get_settings


def data_dir() -> Path:
    path = get_settings().resolved_data_dir
    path.mkdir(parents=True, exist_ok=True)
    return path


def datasets_dir() -> Path:
    path = data_dir() / "datasets"
    path.mkdir(parents=True, exist_ok=True)
    return path


def models_dir() -> Path:
    path = data_dir() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def job_dir(job_id: str) -> Path:
    return data_dir() / "jobs" / job_id


def dataset_file(dataset_id: str) -> Path:
    return datasets_dir() / f"{dataset_id}.jsonl"


def relative(path: Path) -> str:
    return str(path.resolve().relative_to(data_dir()))


def absolute(stored: str) -> Path:
    return data_dir() / stored


def inside_data_dir(path: Path) -> Path | None:
    """The real path if it stays inside the data dir (symlinks resolved), else None."""
    root = os.path.realpath(data_dir())
    real = os.path.realpath(path)
    if os.path.commonpath([root, real]) != root or not os.path.exists(real):
        return None
    return Path(real)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def fsync_dir(folder: Path) -> None:
    """Make a folder's entries (a rename into it, a new file) durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """fsync every file below `folder`, then every folder bottom-up.

    Files become world-readable on the way (some writers, mkstemp among them,
    make 0600 files), so that the API or a worker running as another user can
    read what was written.
    """
    for root, _dirs, files in os.walk(folder, topdown=False):
        for name in files:
            path = Path(root) / name
            path.chmod(0o644)
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
        fsync_dir(Path(root))


@contextmanager
def atomic_file(path: Path, mode: str = "wb", *, permissions: int = 0o644,
                encoding: str | None = None) -> Iterator[IO[Any]]:
    """Yield a handle on a temp sibling of `path`; on success fsync it and rename it to `path`.

    On any failure (the body raising included) the temp file is removed and
    `path` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, permissions)
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes, *, permissions: int = 0o644) -> None:
    """Write `data` to `path` atomically (see `atomic_file`)."""
    with atomic_file(path, "wb", permissions=permissions) as handle:
        handle.write(data)


@contextmanager
def atomic_folder(dest: Path, *, tmp_prefix: str = ".", replace: bool = True) -> Iterator[Path]:
    """Yield an empty temp sibling of `dest` to fill; on success fsync it and rename it to `dest`.

    The temp folder is `<tmp_prefix><name>-<pid>` (hidden by default, so that
    folder listings skip it). With `replace`, an existing `dest` is first
    renamed to `<tmp_prefix>old-<name>-<pid>` and deleted only once the new
    folder is in place, so there is always one complete folder at `dest` or
    none; without it, an existing non-empty `dest` makes the rename fail
    (first writer wins). On any failure the temp folder is removed.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{tmp_prefix}{dest.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        fsync_tree(tmp)
        if replace and dest.exists():
            old = dest.with_name(f"{tmp_prefix}old-{dest.name}-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            os.rename(dest, old)
            try:
                os.rename(tmp, dest)
            except OSError:
                os.rename(old, dest)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, dest)
        fsync_dir(dest.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

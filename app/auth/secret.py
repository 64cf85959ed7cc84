"""The key that signs session cookies: from settings, else one random key kept in the data dir."""
from __future__ import annotations

import os
import secrets

from app import storage
from app.settings import get_settings


def session_secret() -> str:
    configured = get_settings().secret_key
    if configured:
        return configured
    path = storage.data_dir() / "secret_key"
    if not path.exists():
        tmp = path.with_name(f".secret_key.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
        try:
            os.link(tmp, path)  # first writer wins; the others read its key
        except FileExistsError:
            pass
        os.unlink(tmp)
    return path.read_text().strip()

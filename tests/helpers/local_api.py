"""The real app (app.main) in-process, for checks that need no worker: refusals, validation, uploads.

What `running_stack` sets up, minus the processes: a data dir of its own, SQLite
migrated by `tunedeck migrate` (alembic, then the demo dataset), the demo model
in DATA_DIR/models, and the seeded admin with its API token (the app's own
start-up creates them from TUNEDECK_ADMIN_*). No Redis server runs: nothing a
refusal does reaches it. The Redis URL points at a closed port, so a request
that does need Redis fails at once instead of talking to another test's server.

The settings are read from the environment and cached (app.settings.get_settings,
app.db.get_engine), so the environment is set and the caches cleared while the
app lives, and put back afterwards.
"""
from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.embedded_redis import free_port
from tests.helpers.stack import ADMIN_EMAIL, ADMIN_PASSWORD, ADMIN_TOKEN


@dataclass
class LocalApi:
    app: FastAPI
    data_dir: Path
    client: TestClient  # authenticated as the seeded admin, like Stack.client()

    def client_with(self, token: str) -> TestClient:
        """Another client of the same app, with `token` (not entered: the app is already started)."""
        return TestClient(self.app, headers={"Authorization": f"Bearer {token}"})


def _clear_cached_settings() -> None:
    from app.db import get_engine
    from app.settings import get_settings

    get_settings.cache_clear()
    get_engine.cache_clear()


@contextmanager
def local_api(data_dir: Path, demo_model: Path) -> Iterator[LocalApi]:
    """`demo_model`: a built demo model folder (tests.helpers.assets), copied in as DATA_DIR/models/demo."""
    env = {
        "TUNEDECK_DATA_DIR": str(data_dir),
        "TUNEDECK_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "TUNEDECK_ADMIN_EMAIL": ADMIN_EMAIL,
        "TUNEDECK_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "TUNEDECK_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        patch.delenv("TUNEDECK_DATABASE_URL", raising=False)
        _offline_hub(patch)
        _clear_cached_settings()
        try:
            from app.cli import migrate
            from app.main import create_app

            migrate()
            shutil.copytree(demo_model, data_dir / "models" / "demo")
            app = create_app()
            with TestClient(app, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as client:  # runs the lifespan
                yield LocalApi(app, data_dir, client)
        finally:
            from app.db import get_engine

            get_engine().dispose()
            _clear_cached_settings()


def _offline_hub(patch: pytest.MonkeyPatch) -> None:
    """huggingface_hub reads HF_HUB_OFFLINE when first imported; if it already was, say so to it directly."""
    import sys

    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None and hasattr(constants, "HF_HUB_OFFLINE"):
        patch.setattr(constants, "HF_HUB_OFFLINE", True)

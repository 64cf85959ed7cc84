"""Shared fixtures (helpers live in tests/helpers/). `stack` is one real Tunedeck (Redis, worker, API)
for the whole session; `api` is the same app in-process on SQLite, without Redis or a worker."""
from __future__ import annotations

import os

# The suite runs many trainers at once on few cores: every process waits passively for its OpenMP
# threads (a trainer alone would spin briefly, worker/train/threads.py). Set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import httpx  # noqa: E402
import pytest  # noqa: E402

from tests.helpers.assets import shared_assets  # noqa: E402
from tests.helpers.local_api import LocalApi, local_api  # noqa: E402
from tests.helpers.stack import Stack, running_stack  # noqa: E402

# `browser` and `page` (headless Chromium, logged in) for the page tests; `postgres_database`.
pytest_plugins = ["tests.helpers.browser", "tests.helpers.postgres"]

# Modules reading the same once-per-process method runs (tests.helpers.method_runs): one xdist worker.
SHARE_METHOD_RUNS = frozenset({"test_trainer_methods.py", "test_merge.py", "test_generate_cli.py"})


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):  # type: ignore[no-untyped-def]
    """Under `-n N --dist loadscope` (make test) each test module runs on one xdist worker, so its
    module-scoped fixtures (private stacks, trained runs) start once; SHARE_METHOD_RUNS go together.

    (xdist's own `loadgroup` cannot do this on pytest 9: it renames items through `_nodeid`, which
    pytest no longer reads.)"""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "method-runs" if Path(module).name in SHARE_METHOD_RUNS else module

    return ModuleScheduling(config, log)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("tunedeck")) as s:
        yield s


@pytest.fixture(scope="session")
def assets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(demo model folder, demo dataset file), shared by every test that runs the trainer directly."""
    return shared_assets(tmp_path_factory)


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    with stack.client() as c:
        yield c


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalApi]:
    """The real app in-process on a migrated SQLite database of its own, as the seeded admin; no Redis,
    no worker, no server: for refusals and validation, which never reach them. One per test module."""
    demo_model, _ = shared_assets(tmp_path_factory)
    with local_api(tmp_path_factory.mktemp("api"), demo_model) as local:
        yield local


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """SmolLM2-135M-Instruct converted from the bundled GGUF (shared, read-only; see tests/helpers/smollm2.py)."""
    from tests.helpers.smollm2 import smollm2_folder

    return smollm2_folder()

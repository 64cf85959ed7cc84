"""The real routers on a real, seeded SQLite database, without Redis or a worker.

For checks that never reach the queue (refusals, schemas, rendered defaults,
the planner): they cost milliseconds instead of a stack. The data directory
is the given folder for as long as the app is open.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel
from starlette.middleware.sessions import SessionMiddleware

from app.api.deps import get_current_user, get_session
from app.api.errors import validation_handler
from app.db import make_engine
from app.methods import METHODS
from app.models import User
from app.planner.db_catalog import seed_catalogs
from app.settings import get_settings


@dataclass
class RouterApp:
    client: TestClient
    engine: Engine
    user: User


@contextmanager
def router_app(data_dir: Path, api: Sequence[APIRouter] = (), pages: Sequence[APIRouter] = (),
               email: str = "tester@example.com") -> Iterator[RouterApp]:
    """`api` routers under /api/v1 and `pages` at the root, for one logged-in user."""
    previous = os.environ.get("TUNEDECK_DATA_DIR")
    os.environ["TUNEDECK_DATA_DIR"] = str(data_dir)
    get_settings.cache_clear()
    engine = make_engine(f"sqlite:///{data_dir / 'app.db'}")
    SQLModel.metadata.create_all(engine)
    with Session(engine) as session:
        seed_catalogs(session)
        user = User(email=email, password_hash="x")
        session.add(user)
        session.commit()
        session.refresh(user)

    def session_dep() -> Iterator[Session]:
        with Session(engine) as session:
            yield session

    app = FastAPI()
    app.add_exception_handler(RequestValidationError, validation_handler(frozenset(METHODS)))
    for router in api:
        app.include_router(router, prefix="/api/v1")
    for router in pages:
        app.include_router(router)
    app.add_middleware(SessionMiddleware, secret_key="router-app")  # the pages' CSRF token lives there
    app.dependency_overrides[get_session] = session_dep
    app.dependency_overrides[get_current_user] = lambda: user
    app.state.engine = engine
    try:
        with TestClient(app) as client:
            yield RouterApp(client, engine, user)
    finally:
        if previous is None:
            os.environ.pop("TUNEDECK_DATA_DIR", None)
        else:
            os.environ["TUNEDECK_DATA_DIR"] = previous
        get_settings.cache_clear()

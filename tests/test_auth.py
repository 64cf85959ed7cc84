"""Accounts and access: who may see, download, cancel and retry what; CSRF on cookie sessions."""
from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from contextlib import closing
from datetime import timedelta

import httpx
import pytest
from sqlmodel import Session, select

from app.auth.users import hash_token
from app.models import ApiToken, LoginSession, utcnow
from tests.helpers.chaos_stack import engine_of
from tests.helpers.api import job_body
from tests.helpers.stack import ADMIN_EMAIL, ADMIN_PASSWORD, ROOT, Stack

pytestmark = pytest.mark.integration


def _cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], env=stack.env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def _user_token(stack: Stack, email: str) -> str:
    _cli(stack, "create-user", "--email", email, "--password", "password-of-" + email)
    result = _cli(stack, "create-token", "--email", email)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def alice(stack: Stack) -> str:
    return _user_token(stack, "alice@example.com")


@pytest.fixture(scope="module")
def bob(stack: Stack) -> str:
    return _user_token(stack, "bob@example.com")


def _browser_login(stack: Stack, email: str, password: str) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=stack.base_url, timeout=30)
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    response = client.post("/login", data={"email": email, "password": password, "csrf_token": token, "next": "/jobs"})
    assert response.status_code == 303, response.text
    jobs = client.get("/jobs")
    csrf = re.search(r'"X-CSRF-Token": "([^"]+)"', jobs.text).group(1)  # type: ignore[union-attr]
    return client, csrf


def test_without_credentials_the_api_answers_401_and_pages_send_to_login(stack: Stack) -> None:
    with httpx.Client(base_url=stack.base_url, timeout=30) as anonymous:
        assert anonymous.get("/healthz").status_code == 200
        for path in ("/api/v1/jobs", "/api/v1/datasets", "/api/v1/models", "/api/v1/workers"):
            assert anonymous.get(path).status_code == 401, path
        assert anonymous.post("/api/v1/jobs", json=job_body()).status_code == 401
        page = anonymous.get("/jobs/new")
        assert page.status_code == 303 and page.headers["location"].startswith("/login")
        assert anonymous.get("/api/v1/jobs", headers={"Authorization": "Bearer td_wrong"}).status_code == 401


def test_a_user_sees_only_their_own_jobs_and_another_users_id_is_404(stack: Stack, alice: str, bob: str) -> None:
    with stack.client(token=alice) as a, stack.client(token=bob) as b, stack.client() as admin:
        dataset = a.post("/api/v1/datasets", files={"file": ("mine.jsonl", b'{"text": "private"}\n')}).json()
        job = a.post("/api/v1/jobs", json=job_body(dataset=dataset["id"], hyperparameters={"max_steps": 2})).json()
        assert job["status"] == "queued"
        for path in ("", "/events", "/adapter", "/merged", "/metrics", "/samples", "/checkpoints"):
            assert b.get(f"/api/v1/jobs/{job['id']}{path}").status_code == 404, path
        assert b.post(f"/api/v1/jobs/{job['id']}/cancel").status_code == 404
        assert b.post(f"/api/v1/jobs/{job['id']}/retry").status_code == 404
        assert job["id"] not in {j["id"] for j in b.get("/api/v1/jobs").json()["data"]}
        assert dataset["id"] not in {d["id"] for d in b.get("/api/v1/datasets").json()["data"]}
        assert "demo" in {d["id"] for d in b.get("/api/v1/datasets").json()["data"]}
        refused = b.post("/api/v1/jobs", json=job_body(dataset=dataset["id"]))
        assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "dataset"]
        assert a.get(f"/api/v1/jobs/{job['id']}").status_code == 200
        assert admin.get(f"/api/v1/jobs/{job['id']}").status_code == 200
        assert job["id"] in {j["id"] for j in admin.get("/api/v1/jobs", params={"limit": 500}).json()["data"]}
        a.post(f"/api/v1/jobs/{job['id']}/cancel")


def test_a_revoked_token_stops_working(stack: Stack) -> None:
    token = _user_token(stack, "carol@example.com")
    client, csrf = _browser_login(stack, "carol@example.com", "password-of-carol@example.com")
    with closing(client):
        settings = client.get("/settings").text
        token_id = re.search(r'action="/settings/tokens/([0-9a-f]+)/revoke"', settings).group(1)  # type: ignore[union-attr]
        with stack.client(token=token) as api:
            assert api.get("/api/v1/jobs").status_code == 200
            assert client.post(f"/settings/tokens/{token_id}/revoke", headers={"X-CSRF-Token": csrf}).status_code == 303
            assert api.get("/api/v1/jobs").status_code == 401


def test_the_session_cookie_is_httponly_and_samesite(stack: Stack) -> None:
    client = httpx.Client(base_url=stack.base_url, timeout=30)
    with client:
        page = client.get("/login")
        cookie = page.headers.get("set-cookie", "")
        assert "tunedeck_session=" in cookie and "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()


def test_a_wrong_password_is_refused_without_saying_which_part_was_wrong(stack: Stack) -> None:
    with httpx.Client(base_url=stack.base_url, timeout=30) as client:
        page = client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        response = client.post("/login", data={"email": ADMIN_EMAIL, "password": "nope", "csrf_token": token})
        assert response.status_code == 401 and "Wrong email or password." in response.text
        assert client.get("/api/v1/jobs").status_code == 401


def test_cookie_posts_need_the_csrf_token_and_cross_site_posts_are_refused(stack: Stack) -> None:
    client, csrf = _browser_login(stack, ADMIN_EMAIL, ADMIN_PASSWORD)
    with closing(client), stack.client() as api:
        job = api.post("/api/v1/jobs", json=job_body(hyperparameters={"max_steps": 2})).json()
        assert client.post(f"/jobs/{job['id']}/cancel").status_code == 403
        assert client.post(f"/jobs/{job['id']}/cancel", headers={"X-CSRF-Token": "forged"}).status_code == 403
        cross = client.post(f"/jobs/{job['id']}/cancel", headers={
            "X-CSRF-Token": csrf, "Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"})
        assert cross.status_code == 403
        # None of the refused posts cancelled it (it may have finished its 2 steps meanwhile).
        assert api.get(f"/api/v1/jobs/{job['id']}").json()["status"] not in {"cancelled", "cancelling"}
        ok = client.post(f"/jobs/{job['id']}/cancel", headers={"X-CSRF-Token": csrf})
        assert ok.status_code == 200
        assert api.get(f"/api/v1/jobs/{job['id']}").json()["status"] in {"cancelled", "cancelling"}


def test_create_user_refuses_a_duplicate_email(stack: Stack) -> None:
    _cli(stack, "create-user", "--email", "dave@example.com", "--password", "long enough pw")
    again = _cli(stack, "create-user", "--email", "dave@example.com", "--password", "long enough pw")
    assert again.returncode == 1 and "already exists" in again.stderr


def test_a_tokens_last_use_is_written_at_most_once_a_minute(stack: Stack) -> None:
    """Every API call used to write `last_used_at`, queueing reads behind the trainer's event writes."""
    token = _user_token(stack, "dave@example.com")

    def last_used() -> object:
        with Session(engine_of(stack)) as session:
            return session.exec(select(ApiToken).where(ApiToken.token_hash == hash_token(token))).one().last_used_at

    with stack.client(token=token) as api:
        assert api.get("/api/v1/jobs").status_code == 200
        first = last_used()
        assert first is not None
        assert api.get("/api/v1/jobs").status_code == 200
        assert last_used() == first  # within the minute: no write
        with Session(engine_of(stack)) as session:
            row = session.exec(select(ApiToken).where(ApiToken.token_hash == hash_token(token))).one()
            row.last_used_at = first - timedelta(minutes=2)  # type: ignore[operator]
            session.add(row)
            session.commit()
        assert api.get("/api/v1/jobs").status_code == 200
        assert last_used() > first  # type: ignore[operator]


def _login_row(stack: Stack, client: httpx.Client) -> LoginSession | None:
    """The database row behind a browser client's session cookie (the cookie is signed, not encrypted)."""
    payload = client.cookies.get("tunedeck_session").split(".")[0]  # type: ignore[union-attr]
    sid = json.loads(base64.b64decode(payload + "=" * (-len(payload) % 4)))["sid"]
    with Session(engine_of(stack)) as session:
        return session.get(LoginSession, sid)


def test_logging_out_ends_the_session_even_for_a_copied_cookie(stack: Stack) -> None:
    client, csrf = _browser_login(stack, ADMIN_EMAIL, ADMIN_PASSWORD)
    with closing(client):
        copied = client.cookies.get("tunedeck_session")
        out = client.post("/logout", headers={"X-CSRF-Token": csrf})
        assert out.status_code == 303 and out.headers["location"] == "/login"
        assert client.get("/jobs").headers.get("location", "").startswith("/login")
    with httpx.Client(base_url=stack.base_url, timeout=30, cookies={"tunedeck_session": copied}) as replay:
        assert replay.get("/jobs").headers.get("location", "").startswith("/login")
        assert replay.get("/api/v1/jobs").status_code == 401


def test_a_login_lasts_session_hours_and_not_a_moment_longer(stack: Stack) -> None:
    client, _ = _browser_login(stack, ADMIN_EMAIL, ADMIN_PASSWORD)
    with closing(client):
        login = _login_row(stack, client)
        assert login is not None and login.ended_at is None
        assert login.expires_at - login.created_at == timedelta(hours=12)  # TUNEDECK_SESSION_HOURS' default
        assert client.get("/api/v1/jobs").status_code == 200
        with Session(engine_of(stack)) as session:  # as if the 12 hours had passed
            login.expires_at = utcnow() - timedelta(seconds=1)
            session.add(login)
            session.commit()
        assert client.get("/api/v1/jobs").status_code == 401
        assert client.get("/jobs").headers.get("location", "").startswith("/login")

"""An account in a real browser: log in, make an API token (shown once), revoke it, log out."""
from __future__ import annotations

import uuid

import httpx
import pytest
from playwright.sync_api import Browser, expect
from sqlmodel import Session, select

from app.auth.users import create_user, hash_token
from app.models import ApiToken, User
from tests.helpers.browser import TIMEOUT_MS
from tests.helpers.chaos_stack import engine_of
from tests.helpers.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.browser]

PASSWORD = "correct horse battery staple"


def test_a_user_logs_in_makes_a_token_once_revokes_it_and_logs_out(browser: Browser, stack: Stack) -> None:
    email = f"erin-{uuid.uuid4().hex[:6]}@example.com"
    with Session(engine_of(stack)) as session:
        create_user(session, email, PASSWORD)
        stored = session.exec(select(User).where(User.email == email)).one()
        assert stored.password_hash.startswith("$argon2") and PASSWORD not in stored.password_hash

    context = browser.new_context(base_url=stack.base_url)
    context.set_default_timeout(30_000)
    page = context.new_page()
    try:
        page.goto("/jobs")  # not logged in: the login page, coming back here after
        page.wait_for_url("**/login?next=/jobs")
        page.get_by_label("Email").fill(email)
        page.get_by_label("Password").fill("not the password")
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("alert")).to_have_text("Wrong email or password.")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url("**/jobs")

        page.get_by_role("link", name=email).click()
        page.wait_for_url("**/settings")
        page.get_by_label("Token name").fill("CI")
        page.get_by_role("button", name="Create token").click()
        token = page.locator("#new-token").inner_text(timeout=TIMEOUT_MS).strip()
        assert token.startswith("td_")
        with httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {token}"}) as api:
            assert api.get("/api/v1/jobs").status_code == 200
            with Session(engine_of(stack)) as session:  # only its hash is stored
                row = session.exec(select(ApiToken).where(ApiToken.token_hash == hash_token(token))).one()
                assert row.name == "CI" and token not in row.token_hash
            page.goto("/settings")  # shown once: never again
            assert token not in page.content()
            expect(page.get_by_role("cell", name="CI", exact=True)).to_be_visible()
            page.get_by_role("button", name="Revoke").click()
            expect(page.get_by_role("cell", name="No tokens.")).to_be_visible()
            assert api.get("/api/v1/jobs").status_code == 401

        page.get_by_role("button", name="Log out").click()
        page.wait_for_url("**/login")
        page.goto("/settings")
        page.wait_for_url("**/login?next=/settings")
    finally:
        context.close()

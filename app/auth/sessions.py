"""Browser sessions: a signed, HttpOnly, SameSite cookie holding the user id and login time."""
from __future__ import annotations

import time
from fastapi import Request
from sqlmodel import Session

from app.models import User
from app.settings import get_settings

SESSION_USER = "user_id"
SESSION_LOGIN_AT = "login_at"


class LoginRequired(Exception):
    """No valid credentials: the API answers 401, pages redirect to the login page."""


def session_user(request: Request, session: Session) -> User | None:
    user_id = request.session.get(SESSION_USER)
    login_at = request.session.get(SESSION_LOGIN_AT, 0)
    if not user_id:
        return None
    if time.time() - float(login_at) > get_settings().session_hours * 3600:
        request.session.clear()
        return None
    return session.get(User, user_id)


def log_in(request: Request, user: User) -> None:
    request.session.clear()  # a new session id on login: no fixation
    request.session[SESSION_USER] = user.id
    request.session[SESSION_LOGIN_AT] = time.time()

"""Browser sessions: a signed, HttpOnly, SameSite cookie naming a login kept in the database.

The cookie alone would stay valid until it expires, even after logout; the
`login_session` row is what logout and expiry end, so a copied cookie stops
working at the same moment.
"""
from __future__ import annotations

import secrets
from datetime import timedelta

from fastapi import Request
from sqlmodel import Session, col, delete

from app.models import LoginSession, User, as_utc, utcnow
from app.settings import get_settings

SESSION_ID = "sid"


class LoginRequired(Exception):
    """No valid credentials: the API answers 401, pages redirect to the login page."""


def _cookie_login(request: Request, session: Session) -> LoginSession | None:
    """The login row the cookie names, if it names one (ended or not)."""
    sid = request.session.get(SESSION_ID)
    if not isinstance(sid, str) or not sid or len(sid) > 64:
        return None
    return session.get(LoginSession, sid)


def session_user(request: Request, session: Session) -> User | None:
    if not request.session.get(SESSION_ID):
        return None
    login = _cookie_login(request, session)
    if login is None or login.ended_at is not None or as_utc(login.expires_at) <= utcnow():
        request.session.clear()
        return None
    return session.get(User, login.user_id)


def log_in(request: Request, session: Session, user: User) -> LoginSession:
    """A new login row and a new cookie (a fresh id on every login: no session fixation)."""
    now = utcnow()
    session.exec(delete(LoginSession).where(col(LoginSession.expires_at) < now - timedelta(days=1)))  # type: ignore[call-overload]
    login = LoginSession(id=secrets.token_urlsafe(32), user_id=user.id, created_at=now,
                         expires_at=now + timedelta(hours=get_settings().session_hours))
    session.add(login)
    session.commit()
    request.session.clear()
    request.session[SESSION_ID] = login.id
    return login


def log_out(request: Request, session: Session) -> None:
    """Ends the login on the server, then forgets the cookie."""
    login = _cookie_login(request, session)
    if login is not None and login.ended_at is None:
        login.ended_at = utcnow()
        session.add(login)
        session.commit()
    request.session.clear()

"""Users and their API tokens. Passwords are argon2 hashes; tokens are stored as SHA-256 only."""
from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from pwdlib import PasswordHash
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from app.models import ApiToken, User, as_utc, utcnow

_hasher = PasswordHash.recommended()
TOKEN_PREFIX = "td_"
MIN_PASSWORD = 8
LAST_USED_RESOLUTION = timedelta(minutes=1)


class AccountError(ValueError):
    """A user or token request that cannot be honoured; the message says why."""


def normalise_email(email: str) -> str:
    email = email.strip().lower()
    if "@" not in email or len(email) > 320 or email.startswith("@") or email.endswith("@"):
        raise AccountError(f"{email!r} is not an email address")
    return email


def create_user(session: Session, email: str, password: str, *, is_admin: bool = False) -> User:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"the password needs at least {MIN_PASSWORD} characters")
    user = User(email=normalise_email(email), password_hash=_hasher.hash(password), is_admin=is_admin)
    session.add(user)
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise AccountError(f"a user with email {user.email} already exists") from exc
    session.refresh(user)
    return user


def user_by_email(session: Session, email: str) -> User | None:
    try:
        email = normalise_email(email)
    except AccountError:
        return None
    return session.exec(select(User).where(User.email == email)).first()


def authenticate(session: Session, email: str, password: str) -> User | None:
    user = user_by_email(session, email)
    if user is None:
        _hasher.hash(password)  # same work either way, so timing does not reveal which emails exist
        return None
    return user if _hasher.verify(password, user.password_hash) else None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, user: User, name: str = "", *, token: str | None = None) -> tuple[ApiToken, str]:
    """A new token for `user`; the plain text is returned once and never stored."""
    plain = token or TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user_id=user.id, name=name[:100], token_hash=hash_token(plain), prefix=plain[:10])
    session.add(row)
    session.commit()
    session.refresh(row)
    return row, plain


def user_for_token(session: Session, token: str) -> User | None:
    row = session.exec(select(ApiToken).where(ApiToken.token_hash == hash_token(token))).first()
    if row is None or row.revoked_at is not None:
        return None
    now = utcnow()
    # A write per request would queue every API call behind the trainer's event writes (SQLite has one
    # writer); "last used" to the minute is what the settings page needs.
    if row.last_used_at is None or now - as_utc(row.last_used_at) >= LAST_USED_RESOLUTION:
        row.last_used_at = now
        session.add(row)
        session.commit()
    return session.get(User, row.user_id)


def list_tokens(session: Session, user: User) -> list[ApiToken]:
    stmt = select(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))  # type: ignore[union-attr]
    return list(session.exec(stmt.order_by(ApiToken.created_at.desc())))  # type: ignore[attr-defined]


def revoke_token(session: Session, user: User, token_id: str) -> bool:
    row = session.get(ApiToken, token_id)
    if row is None or row.user_id != user.id or row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    session.add(row)
    session.commit()
    return True


def ensure_admin(session: Session, email: str | None, password: str | None, token: str | None) -> None:
    """First start: the admin from TUNEDECK_ADMIN_EMAIL/PASSWORD, and TUNEDECK_ADMIN_TOKEN seeded for it."""
    if not email:
        return
    user = user_by_email(session, email)
    if user is None:
        if not password:
            raise AccountError("TUNEDECK_ADMIN_EMAIL is set without TUNEDECK_ADMIN_PASSWORD")
        try:
            user = create_user(session, email, password, is_admin=True)
        except AccountError:
            user = user_by_email(session, email)  # another process created it first
            if user is None:
                raise
    if token and session.exec(select(ApiToken).where(ApiToken.token_hash == hash_token(token))).first() is None:
        try:
            create_token(session, user, "seeded from TUNEDECK_ADMIN_TOKEN", token=token)
        except IntegrityError:
            session.rollback()


LOCAL_ADMIN_EMAIL = "admin@localhost"


def first_admin_if_none(session: Session) -> tuple[str, str] | None:
    """On a machine with no users yet, an admin with a random password that `tunedeck up` prints once."""
    if session.exec(select(User)).first() is not None:
        return None
    password = secrets.token_urlsafe(12)
    create_user(session, LOCAL_ADMIN_EMAIL, password, is_admin=True)
    return LOCAL_ADMIN_EMAIL, password

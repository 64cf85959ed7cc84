"""Who may see a row: its owner, an admin, or anyone when it is shared (no owner)."""
from __future__ import annotations

from app.models import User


def can_see(user: User, owner_id: str | None) -> bool:
    return user.is_admin or owner_id is None or owner_id == user.id

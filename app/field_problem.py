"""One shape for "this value is wrong, fix it here", shared by the domain's errors."""
from __future__ import annotations


class FieldProblem(ValueError):
    """A value that is well-formed but wrong; `field` names what to fix, `message` says why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

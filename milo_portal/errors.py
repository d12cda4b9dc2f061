"""Exceptions raised by services for rule violations the user must be told about."""
from __future__ import annotations


class DomainError(Exception):
    """A business rule refused the operation; ``field`` names the form field it concerns."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

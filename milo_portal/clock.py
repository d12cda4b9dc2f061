"""The one place that reads the wall clock.

Every rule in the app takes ``now`` as an argument; only request handlers, the CLI and the
scheduler tick call :func:`now` to obtain it, so tests can pick any instant they like.
"""
from __future__ import annotations

from datetime import datetime, timezone


def now() -> datetime:
    """Return the current instant as an aware UTC datetime."""
    return datetime.now(timezone.utc)

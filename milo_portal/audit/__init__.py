"""The audit log: who did what and when, on a page for the team (filters, CSV export).

Other areas call :func:`record` (re-exported from ``services``) in the same transaction as
the change they make, so an entry exists exactly when the change was committed.
"""
from flask import Blueprint

from .services import KINDS, record  # noqa: F401  (the one entry point other areas use)

bp = Blueprint("audit", __name__)

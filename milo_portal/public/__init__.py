"""Candidate-facing pages: the unique link (/i/), the share link (/s/). No login."""
from flask import Blueprint

bp = Blueprint("public", __name__)

from . import views  # noqa: E402,F401

"""Interview agents: setup, questions and the Share panel."""
from flask import Blueprint

bp = Blueprint("agents", __name__)

from . import views  # noqa: E402,F401

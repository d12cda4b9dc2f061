"""The JSON API under /api/v1/: authenticated by API keys, JSON errors only, no session, no CSRF."""
from flask import Blueprint

bp = Blueprint("api", __name__, url_prefix="/api/v1")

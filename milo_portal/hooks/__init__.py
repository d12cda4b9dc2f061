"""Inbound webhooks under /hooks/: authenticated by signature, exempt from CSRF."""
from flask import Blueprint

bp = Blueprint("hooks", __name__, url_prefix="/hooks")

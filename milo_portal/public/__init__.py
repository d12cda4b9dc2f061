"""Candidate-facing pages: the unique link (/i/), the share link (/s/). No login."""
from flask import Blueprint

bp = Blueprint("public", __name__)

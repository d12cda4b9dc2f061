"""The Metrics page: where candidates drop out, what to change, and whether it worked."""
from flask import Blueprint

bp = Blueprint("metrics", __name__)

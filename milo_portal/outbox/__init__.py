"""The outbox page: every message by status, with retry, resolve and cancel."""
from flask import Blueprint

bp = Blueprint("outbox", __name__)

"""Interview agents: setup, questions and the Share panel."""
from flask import Blueprint

bp = Blueprint("agents", __name__)

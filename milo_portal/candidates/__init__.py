"""Candidates: Add Candidates, the list, the candidate page."""
from flask import Blueprint

bp = Blueprint("candidates", __name__)

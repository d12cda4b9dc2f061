"""Team-wide settings: messaging identity and channels, and the follow-up timing rules."""
from flask import Blueprint

bp = Blueprint("settings", __name__)

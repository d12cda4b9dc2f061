"""Integrations: inbound webhooks (ATS, Indeed, generic), API keys and outbound candidate events."""
from flask import Blueprint

bp = Blueprint("integrations", __name__)

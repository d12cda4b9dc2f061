"""Messaging: templates and their editor, the e-mail/SMS/WhatsApp channels, sending one message."""
from flask import Blueprint

bp = Blueprint("messaging", __name__)

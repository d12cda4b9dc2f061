"""Accounts: login, logout, team management, own profile."""
from flask import Blueprint

bp = Blueprint("auth", __name__)

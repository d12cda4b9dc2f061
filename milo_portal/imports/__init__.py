"""Bulk upload: CSV, Excel, resumes and zips reviewed, then created in chunks (see services)."""
from flask import Blueprint

bp = Blueprint("imports", __name__)

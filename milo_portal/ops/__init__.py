"""Operations: backups and restores, retention, health and metrics, structured logs,
graceful shutdown. Its views add the Settings sections for retention and backups,
``/ops/metrics`` (Prometheus) and ``/healthz`` (see ``health``)."""
from flask import Blueprint

bp = Blueprint("ops", __name__)

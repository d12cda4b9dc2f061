"""``/ops/metrics`` in Prometheus' text format (prometheus-client).

Every figure is read from the database at scrape time, so all gunicorn workers answer the
same and nothing is kept per process (no multiprocess directory to manage).
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from ..models import MessageStatus
from .health import Health


class _HealthCollector:
    def __init__(self, health: Health) -> None:
        self.health = health

    def collect(self):
        h = self.health
        yield GaugeMetricFamily("milo_up", "1 when the database answers and the scheduler ticks",
                                value=1.0 if h.ok else 0.0)
        yield GaugeMetricFamily("milo_database_up", "1 when the database answers", value=1.0 if h.database_ok else 0.0)
        if not h.database_ok:
            return
        yield GaugeMetricFamily("milo_scheduler_last_tick_age_seconds",
                                "Seconds since a scheduler tick last completed (-1: never)",
                                value=-1.0 if h.tick_age is None else h.tick_age)
        yield GaugeMetricFamily("milo_outbox_due_messages", "Messages due now and not sent yet", value=h.backlog or 0)
        yield GaugeMetricFamily("milo_outbox_oldest_due_age_seconds",
                                "How long the oldest due message has waited (0: none due)",
                                value=h.oldest_due_age or 0.0)
        statuses = GaugeMetricFamily("milo_outbox_messages", "Outbox messages by status", labels=["status"])
        for status in MessageStatus.ALL:
            statuses.add_metric([status], (h.by_status or {}).get(status, 0))
        yield statuses
        yield GaugeMetricFamily("milo_last_backup_timestamp_seconds", "When the last backup was taken (0: never)",
                                value=h.last_backup_at.timestamp() if h.last_backup_at else 0.0)
        yield GaugeMetricFamily("milo_last_backup_size_bytes", "Size of the last backup",
                                value=h.last_backup_size or 0)


def render(health: Health) -> bytes:
    """The exposition text of one scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_HealthCollector(health))
    return generate_latest(registry)

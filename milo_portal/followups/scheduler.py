"""The in-process clock: one APScheduler job that plans and dispatches every tick.

APScheduler only keeps time. Nothing about messages is stored in it, and nothing relies
on it being the only scheduler: every gunicorn worker may run its own tick, and the
database's claims and unique constraints keep each message to one send.
"""
from __future__ import annotations

import atexit
import logging
import os
import sys

import click
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from flask import Flask
from werkzeug.serving import is_running_from_reloader

from ..clock import now
from ..extensions import db, scheduler

log = logging.getLogger(__name__)
JOB_ID = "milo-tick"


def run_once(app: Flask) -> bool:
    """One tick in an app context: plan follow-ups, then dispatch. Never raises."""
    from .services import tick

    with app.app_context():
        try:
            planned, dispatched = tick(db.session, now())
        except Exception:
            log.exception("Scheduler tick failed; the next tick will try again")
            db.session.rollback()
            return False
        finally:
            db.session.remove()
    if dispatched.sent or dispatched.failed or dispatched.retried or planned.planned:
        log.info("tick: %s; %s", planned.summary(), dispatched.summary())
    return True


def should_start(app: Flask) -> bool:
    """Start the clock in servers (gunicorn, ``flask run``), not in other CLI commands or tests."""
    if not app.config["MILO_SCHEDULER"] or app.testing:
        return False
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.command.name != "run":
        return False  # flask db upgrade, flask milo ...: no background sending
    if ctx is not None and app.debug and not is_running_from_reloader() and "--no-reload" not in sys.argv:
        return False  # the debug reloader's watcher process: its child runs the app
    return True


def init_scheduler(app: Flask, force: bool = False) -> None:
    """Add the tick job (fixed id, replace_existing, coalesce, max_instances=1) and start.

    ``force`` starts it whatever the configuration says (the end-to-end test does).
    """
    if not force and not should_start(app):
        return
    if not scheduler.running:
        scheduler.configure(jobstores={"default": MemoryJobStore()},
                            executors={"default": ThreadPoolExecutor(1)},
                            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30},
                            timezone="UTC")
    scheduler.add_job(run_once, "interval", args=[app], seconds=app.config["MILO_TICK_SECONDS"], id=JOB_ID,
                      replace_existing=True, coalesce=True, max_instances=1, next_run_time=now())
    if not scheduler.running:
        scheduler.start()
        atexit.register(lambda: scheduler.shutdown(wait=False) if scheduler.running else None)
        log.info("Scheduler started in process %s: a tick every %s s", os.getpid(), app.config["MILO_TICK_SECONDS"])

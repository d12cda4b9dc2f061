"""Graceful shutdown: on SIGTERM a worker finishes the message it is sending, records the
outcomes, hands its other claims back (``scheduled``, attempt not counted) and stops its
scheduler.

The dispatcher asks :func:`stopping` before each claim and each send; gunicorn's hooks
(``gunicorn.conf.py``) call :func:`begin` on SIGTERM and :func:`stop_scheduler` as the
worker exits. A process killed outright (SIGKILL) leaves its claims ``sending``: they become
``in_doubt`` when their lease ends and are never re-sent on their own.
"""
from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)
_stop = threading.Event()


def begin() -> None:
    """Ask the dispatcher of this process to stop after the message it is sending."""
    _stop.set()


def stopping() -> bool:
    """Whether this process is shutting down (no new claim, no new send)."""
    return _stop.is_set()


def reset() -> None:
    """Forget a shutdown request (tests that run several in one process)."""
    _stop.clear()


def stop_scheduler(timeout: float = 25.0) -> bool:
    """Stop this process's scheduler, waiting up to ``timeout`` s for a running tick to end.

    Returns whether the tick (if any) ended in time.
    """
    from ..extensions import scheduler

    begin()
    if not scheduler.running:
        return True
    scheduler.pause()  # no new tick starts while we wait
    done = threading.Event()

    def _shutdown():
        scheduler.shutdown(wait=True)
        done.set()

    threading.Thread(target=_shutdown, name="milo-scheduler-stop", daemon=True).start()
    finished = done.wait(timeout)
    log.info("Scheduler stopped%s", "" if finished else " (a tick was still running)")
    return finished

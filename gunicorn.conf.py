"""gunicorn settings for the container (``gunicorn -c gunicorn.conf.py wsgi:app``).

Several workers are safe: each runs its own scheduler tick, and correctness comes from the
database (every message is claimed before it is sent; unique constraints stop a second
insert of a follow-up), never from there being one scheduler. Nothing else is kept in a
worker's memory between requests (login throttling, for one, is counted in the database).
"""
import os

bind = os.environ.get("MILO_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("MILO_WORKERS", "2"))
threads = int(os.environ.get("MILO_THREADS", "4"))
timeout = 60
# No access log: its lines hold the path asked for, and so every candidate's link token (the
# credential that opens their interview). The app logs each request itself, as one JSON line
# with the URL rule instead (``ops.logs``), on stderr like gunicorn's own messages.
accesslog = None
# gunicorn believes no peer's X-Forwarded-Proto: the app alone decides which peers are
# proxies (MILO_TRUSTED_PROXIES and MILO_TRUSTED_PROXY_ADDRESSES, which also takes networks),
# so the scheme and the client address always come from the same, single list.
forwarded_allow_ips = ""
# On SIGTERM (docker stop, systemctl stop, a deploy) a worker stops claiming, finishes the
# message it is sending, hands its other claims back to "scheduled" and stops its scheduler
# (milo_portal/ops/shutdown.py). Whatever is still running after this many seconds is
# killed: such a claim becomes "in doubt" and is never re-sent on its own.
graceful_timeout = int(os.environ.get("MILO_GRACEFUL_SECONDS", "30"))


def post_worker_init(worker):
    """Tell this worker's dispatcher about SIGTERM as soon as it arrives."""
    import signal

    from milo_portal.ops import shutdown

    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):
        shutdown.begin()
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_term)

    # Load what the first request would (the user-agent lists, a fifth of a second), then
    # freeze what is loaded out of the garbage collector's way (milo_portal/ops/serving.py).
    from milo_portal.ops.serving import prepare_worker

    prepare_worker()


def worker_exit(server, worker):
    """Stop the worker's scheduler, letting a running tick hand back its claims first."""
    from milo_portal.ops import shutdown

    shutdown.stop_scheduler(timeout=max(graceful_timeout - 5, 1))

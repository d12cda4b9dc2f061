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
accesslog = "-"
# gunicorn believes no peer's X-Forwarded-Proto: the app alone decides which peers are
# proxies (MILO_TRUSTED_PROXIES and MILO_TRUSTED_PROXY_ADDRESSES, which also takes networks),
# so the scheme and the client address always come from the same, single list.
forwarded_allow_ips = ""

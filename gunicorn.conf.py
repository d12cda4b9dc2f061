"""gunicorn settings for the container (``gunicorn -c gunicorn.conf.py wsgi:app``).

Several workers share one database; nothing is kept in a worker's memory between requests
(login throttling, for one, is counted in the database).
"""
import os

bind = os.environ.get("MILO_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("MILO_WORKERS", "2"))
threads = int(os.environ.get("MILO_THREADS", "4"))
timeout = 60
accesslog = "-"
forwarded_allow_ips = os.environ.get("MILO_FORWARDED_ALLOW_IPS", "127.0.0.1")

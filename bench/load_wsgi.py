"""What ``bench/load.py`` serves: the app exactly as ``wsgi.py`` builds it, plus one bare endpoint.

The bare endpoint is the floor of the load benchmark: it runs in the same gunicorn workers,
with the same configuration and the same before/after-request hooks as every page, but
reads no database and renders no template. Not imported by the app or the tests.
"""
from milo_portal import PUBLIC_ENDPOINTS, create_app

app = create_app()
BARE_PATH = "/bench/bare"


@app.get(BARE_PATH)
def bench_bare():
    """A constant short text: what any request costs in this stack, before the app's own work."""
    return "ok\n", 200, {"Content-Type": "text/plain"}


# Reachable without logging in, like the candidate pages it is compared with.
PUBLIC_ENDPOINTS.add("bench_bare")

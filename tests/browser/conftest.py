"""Browser tests: the app served on loopback, driven in Debian's Chromium by Playwright.

Chromium is required: without it these tests fail (CI installs it), they never skip.
"""
from __future__ import annotations

import os
import threading

import pytest
from werkzeug.serving import make_server

from milo_portal import create_app
from milo_portal.config import TestConfig
from milo_portal.extensions import db

CHROMIUM = os.environ.get("MILO_CHROMIUM", "/usr/bin/chromium")
INTRANET_HOST = "milo.intranet.test"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # A plain-http intranet host name: NOT a secure context, unlike localhost.
    f"--host-resolver-rules=MAP {INTRANET_HOST} 127.0.0.1",
]


def _closing(app):
    """The app, with each response closed even when the browser drops the connection.

    werkzeug's development server closes a response only after writing all of it: when
    Chromium cancels a request (the favicon, as the page navigates on) the static file stays
    open until it is collected, and its ResourceWarning fails whichever test is running.
    """
    def wsgi(environ, start_response):
        body = app(environ, start_response)
        try:
            yield from body
        finally:
            if hasattr(body, "close"):
                body.close()
    return wsgi


class LiveServer:
    def __init__(self, app):
        self.app = app
        self.server = make_server("127.0.0.1", 0, _closing(app), threaded=True)
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = "", host: str = INTRANET_HOST) -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture()
def live_server(app, database_url):
    served = create_app(TestConfig, database_url=database_url)
    server = LiveServer(served)
    # Links the app generates point at the intranet name, as MILO_PUBLIC_BASE_URL would.
    served.config["MILO_PUBLIC_BASE_URL"] = server.url()
    server.thread.start()
    db.session.commit()
    yield server
    server.server.shutdown()
    server.thread.join(5)
    with served.app_context():
        db.engine.dispose()


@pytest.fixture(scope="session")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium is required for the browser tests and was not found at {CHROMIUM} "
                    "(apt-get install chromium, or set MILO_CHROMIUM).")
    from playwright.sync_api import expect, sync_playwright

    # Assertions that wait (expect(...).to_be_visible() and the like) wait as long as page
    # actions do: a loaded machine can take more than Playwright's default 5 s to answer.
    expect.set_options(timeout=10_000)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture()
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


def login(page, server, email: str, password: str) -> None:
    """Log in through the real form."""
    page.goto(server.url("/login"))
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/agents")

"""The development server of ``make run``: candidates' link tokens never reach its output."""
from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import requests

from milo_portal.clock import now
from milo_portal.extensions import db
from milo_portal.models import Candidate
from tests.conftest import make_agent
from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent


def _make_run_command(port: int) -> list[str]:
    """The server command of the Makefile's ``run`` target, as ``make run PORT=port`` runs it."""
    recipe = re.search(r"^run:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    line = next(line for line in recipe.splitlines() if "$(FLASK)" in line)
    arguments = line.split("$(FLASK)", 1)[1].replace("$(PORT)", str(port))
    return [sys.executable, "-m", "flask", "--app", "milo_portal", *shlex.split(arguments)]


def test_make_runs_server_logs_no_link_token_and_still_says_where_it_runs(app, database_url):
    agent = make_agent()
    person = Candidate(agent_id=agent.id, name="Ada", email="ada@example.com", timezone="UTC",
                       deadline_at=now() + timedelta(days=5))
    db.session.add(person)
    db.session.flush()
    token = person.token
    db.session.commit()  # and nothing after: an open write unit here would hold the server's writes
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MILO_", "MAIL_", "TWILIO_", "FLASK_"))}
    env.update(MILO_DATABASE_URL=database_url, MILO_SECRET_KEY="x" * 32, MILO_SCHEDULER="0",
               MILO_PUBLIC_BASE_URL=f"http://127.0.0.1:{port}", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(_make_run_command(port), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{base}/healthz", timeout=5)
                break
            except requests.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        assert requests.get(f"{base}/i/{token}", timeout=10).status_code == 200
        assert requests.get(f"{base}/i/{token}?utm=1", timeout=10).status_code == 200
        # A malformed request line is logged as an error that quotes it: without the token.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(f"GET /i/{token} and-more HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert b" 400 " in raw.recv(1024)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    assert token not in output, output
    assert f"Running on http://127.0.0.1:{port}" in output  # the start-up lines still show
    assert '"path":"/i/<token>"' in output  # the app's own request log covers the requests
    assert "GET /i/<token> and-more HTTP/1.1" in output

"""The README's shell examples of signing a webhook post work as written, against a live server."""
from __future__ import annotations

import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from milo_portal.clock import now
from milo_portal.extensions import db
from milo_portal.integrations import services
from milo_portal.models import Candidate
from tests.conftest import make_agent

README = Path(__file__).resolve().parents[1] / "README.md"


def _example(after: str) -> str:
    """The first ```sh block of the README that follows the words ``after``."""
    text = README.read_text()
    start = text.index(after)
    found = re.search(r"```sh\n(.*?)```", text[start:], re.S)
    assert found, f"no shell example after {after!r}"
    return found.group(1)


@pytest.fixture()
def served(app):
    if not (shutil.which("curl") and shutil.which("openssl") and shutil.which("bash")):
        pytest.skip("curl, openssl and bash run the README's examples (.ci/run installs them)")
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.mark.parametrize("kind, after, job", [
    ("generic", "Signing a post to a generic webhook from a shell", "night-picker"),
    ("greenhouse", "What Greenhouse posts for a new application", "4690"),
])
def test_the_readmes_signed_post_adds_the_candidate(served, app, kind, after, job):
    agent_id = make_agent().id
    integration, secret = services.create_integration(db.session, kind, f"My {kind}", now())
    services.map_job(db.session, integration, job, str(agent_id))
    url = f"{served}/hooks/{kind}/{integration.token}"
    db.session.commit()
    db.session.remove()  # no transaction of the test's may stand in the server's way
    script = "set -euo pipefail\n" + _example(after) + '\nprintf "\\n"\n'
    done = subprocess.run(["bash", "-c", script], env={"PATH": "/usr/bin:/bin", "SECRET": secret, "URL": url},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert '"created"' in done.stdout, done.stdout
    person = db.session.query(Candidate).one()
    assert (person.name, person.email, person.agent_id) == ("Ada Lovelace", "ada@example.com", agent_id)

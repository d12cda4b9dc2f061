"""What a gunicorn worker does before its first request (``gunicorn.conf.py``, ``ops/serving.py``)."""
from __future__ import annotations

import json
import signal
import subprocess
import sys

from milo_portal.config import ROOT
from milo_portal.extensions import db
from milo_portal.models import Candidate, Stage
from tests.conftest import make_agent
from tests.servers import SmtpSink
from tests.test_ops_processes import _client, _read_output, _server, _wait_until_up

# Run in a process of its own: freezing is for the life of a process, and a test process
# that froze its objects would keep them all.
_WORKER = r"""
import gc, json, runpy, signal, sys
sys.path.insert(0, sys.argv[1])
settings = runpy.run_path(sys.argv[1] + "/gunicorn.conf.py")
before = gc.get_freeze_count()
settings["post_worker_init"](None)
print(json.dumps({"before": before, "frozen": gc.get_freeze_count(),
                  "sigterm_hooked": signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None)}))
"""


def test_a_worker_freezes_what_it_loaded_before_serving():
    """Defect: every full garbage collection in a worker walked all the objects the app had
    loaded (about 130,000) and took 80-110 ms, while every thread of the worker waited: a
    tenth of a second added, every few Metrics pages, to whatever was being served. The
    worker now freezes what it loaded before its first request, and still hooks SIGTERM."""
    out = subprocess.run([sys.executable, "-c", _WORKER, str(ROOT)], capture_output=True, text=True, timeout=120,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["before"] == 0
    # The modules, the user-agent lists and the rest of what was loaded: tens of thousands.
    assert found["frozen"] > 20_000
    assert found["sigterm_hooked"]


def test_the_servers_log_never_holds_a_candidates_token(app, database_url):
    """Defect: ``gunicorn.conf.py`` turned gunicorn's access log on (stdout: ``docker logs``),
    one line per request with the path asked for. Every candidate's link token, the
    credential that opens their interview, and every share-link token went into the log,
    which the app's own request lines were written to keep out ("the URL rule, never the
    token"). The server's request lines are now only the app's."""
    agent = make_agent("Logs")
    candidate = Candidate(agent_id=agent.id, name="Ada", email="ada@example.com", timezone="UTC", stage=Stage.INVITED)
    db.session.add(candidate)
    db.session.commit()
    token, share = candidate.token, agent.share_token
    db.session.commit()  # (reading them began a transaction: end it before the server writes)
    sink = SmtpSink().start()
    proc, url = _server(database_url, sink.port)
    output_of = _read_output(proc)
    try:
        _wait_until_up(url)
        for path in (f"/i/{token}", f"/i/{token}?src=mail", f"/s/{share}"):
            assert _client().get(url + path, timeout=30).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        output = output_of()
        sink.stop()
    lines = [json.loads(line) for line in output.splitlines() if line.startswith('{"event":"request"')]
    assert {(line["path"], line["status"]) for line in lines} >= {("/i/<token>", 200), ("/s/<share_token>", 200)}
    assert token not in output and share not in output, output[-2000:]

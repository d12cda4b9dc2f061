"""What a gunicorn worker does before its first request (``gunicorn.conf.py``, ``ops/serving.py``)."""
from __future__ import annotations

import json
import subprocess
import sys

from milo_portal.config import ROOT

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


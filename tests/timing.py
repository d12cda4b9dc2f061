"""A guard for tests of things that used to hang: fail after a while instead of hanging the suite."""
from __future__ import annotations

import contextvars
import threading
import time


def finishes_within(seconds: float, func):
    """(func's result, when it started, how long it took), run in a helper thread with the
    caller's context (the test's app context); the test fails if it has not returned in time.

    An exception func raises is raised here. Code that never lets go of the GIL (one huge
    power computed in C) still hangs the whole process: the bounds under test prevent that.
    """
    outcome: dict = {}
    context = contextvars.copy_context()

    def run() -> None:
        try:
            outcome["result"] = context.run(func)
        except BaseException as err:  # handed back below
            outcome["error"] = err

    worker = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still running after {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"], started, time.monotonic() - started

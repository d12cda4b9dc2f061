"""What a server process does once, before its first request.

gunicorn calls :func:`prepare_worker` from ``post_worker_init`` (``gunicorn.conf.py``).

1. It loads now what a first request would otherwise load: the user-agent lists, a fifth of
   a second, which every visit queued behind the first would have waited for.
2. It moves every object loaded so far (the modules, the app, its routes, templates and
   those lists: about 130,000 objects) out of the garbage collector's way with
   ``gc.freeze()``. These objects live as long as the process. Without the freeze, each
   full collection walked all of them. Full collections come every few requests that
   allocate a lot, such as the Metrics page or a burst of answers. Each one took 80–110 ms
   on a 2-core server, and every thread of the worker waited for it. That was a tenth of
   a second added to whichever requests were running at that moment.
"""
from __future__ import annotations

import gc


def prepare_worker() -> None:
    """Load the first request's lazy lists, then freeze what is loaded (see the module docstring)."""
    from milo_portal.public.services import warm_up

    warm_up()
    # Garbage from start-up is collected first, so that nothing unreachable stays frozen.
    gc.collect()
    gc.freeze()

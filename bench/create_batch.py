"""Create one large bulk-upload batch in an existing database, as a recruiter would (not a test).

Usage: .venv/bin/python bench/create_batch.py --database-url URL [--rows 50000] [--folder DIR]

What ``bench/load.py --beside-create N`` runs in a second process while it drives the candidate
pages: it generates a job board export of N rows (``bench/ingest.py``'s generator), uploads
and reviews it for the first active agent, confirms it (the batch is queued, as any batch of
more than 1,000 rows is), then works it to the end with the scheduler's own worker
(``imports.services.work_queued``, in chunks that release the write lock between them).

Prints one line "creating" when the create begins, then one JSON line with the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--folder", help="where the upload's files are kept (default: a temporary folder)")
    args = parser.parse_args()
    os.environ["MILO_DATABASE_URL"] = args.database_url
    os.environ["MILO_SCHEDULER"] = "0"  # this process only creates; the server's workers tick

    from sqlalchemy import select

    from ingest import export  # the same generated export as bench/ingest.py
    from milo_portal import create_app
    from milo_portal.clock import now
    from milo_portal.extensions import db
    from milo_portal.imports import services
    from milo_portal.models import Agent, ImportBatch, User

    app = create_app()
    with tempfile.TemporaryDirectory() as tmp, app.app_context():
        root = Path(args.folder or tmp)
        agent = db.session.scalars(select(Agent).where(Agent.archived_at.is_(None)).order_by(Agent.id)).first()
        user_id = db.session.scalars(select(User.id).order_by(User.id)).first()
        # Addresses no demo candidate has: every row is new.
        data = export(args.rows, seed=int(time.time())).replace(b"@example.com", b"@create-beside.example")
        moment = now()
        started = time.perf_counter()
        batch = services.start_upload(db.session, root, agent, [("export.csv", data)], moment, user_id, "email")
        mapping = services.parse_mapping(batch.mapping)
        services.review(db.session, batch, services.load_items(root, batch), mapping, "email")
        db.session.commit()
        review_s = time.perf_counter() - started

        chunks: list[float] = []
        timed = services._create_chunk

        def chunk(*a, **k):
            began = time.perf_counter()
            try:
                return timed(*a, **k)
            finally:
                chunks.append(time.perf_counter() - began)

        services._create_chunk = chunk
        print("creating", flush=True)
        started = time.perf_counter()
        services.confirm(db.session, root, batch, mapping, "email", True, moment, user_id)
        while db.session.get(ImportBatch, batch.id).status == ImportBatch.CREATING:
            services.work_queued(db.session, root, now(), "bench-create", budget=None)
            db.session.expire_all()
        create_s = time.perf_counter() - started
        done = db.session.get(ImportBatch, batch.id)
        print(json.dumps({"rows": args.rows, "created": done.created_count, "status": done.status,
                          "review_s": round(review_s, 2), "create_s": round(create_s, 2),
                          "chunks": len(chunks), "chunk_max_ms": round(max(chunks, default=0) * 1000, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Requests per second and latency of the real server under load (not a test).

Usage: .venv/bin/python bench/load.py [--candidates 100000] [--concurrency 16] [--duration 10]
       [--rounds 3] [--database-url URL [--reset | --reuse]] [--backlog send|keep]
       [--scenarios landing,question,...] [--beside-create 50000]

1. Builds a fresh database (SQLite in a temporary folder by default) with ``flask db upgrade``
   and ``flask milo demo-data --candidates N``, and picks random real tokens: candidates
   invited, opened or clicked for the landing page, started ones for a question page and the
   answer POST.
2. Starts gunicorn with the repository's gunicorn.conf.py (its workers and threads), bound to
   127.0.0.1 on a free port, the scheduler on (sending to an SMTP sink on loopback), serving
   bench/load_wsgi.py: the app as wsgi.py builds it plus one bare endpoint (constant text, no
   database). The bare endpoint is the floor: same process, same settings, same hooks.
3. Prints the first load of /i/<token> (HTML and the assets it references) in bytes, with and
   without gzip.
4. Drives each scenario at fixed concurrency for a fixed time with wrk (a Python client if wrk
   is missing, which says so), right after a run of the bare endpoint, for several rounds, and
   prints req/s, p50/p99 latency, errors (4xx/5xx and connection errors) and the ratio to the
   bare run just before, then min/median over rounds against the goals:
   /i/ >= 0.3 of bare, p99 < 150 ms, 0 errors.

5. With --beside-create N, after the rounds: a second process uploads, reviews and creates an
   N-row bulk batch (bench/create_batch.py: the scheduler's own chunked worker), and the
   landing and question pages are driven again, back to back, for as long as it runs. Goal:
   no errors, and each page's p99 at most twice its p99 without the create (the create takes
   one of the two cores, so req/s drops; a write lock held too long would show as seconds).

Every request goes to 127.0.0.1; gunicorn and the SMTP sink are stopped at the end or on Ctrl-C.
"""
from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import random
import re
import runpy
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, inspect, text  # noqa: E402

from milo_portal.config import normalise_database_url  # noqa: E402
from milo_portal.demo import DEMO_PASSWORD, TEAM  # noqa: E402
from tests.servers import SmtpSink, free_port  # noqa: E402

BARE = "/bench/bare"
HOST = "127.0.0.1"
# What a phone's browser sends: the pages are compressed for it, as they would be in real use.
UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
      "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1")
BROWSER = {"User-Agent": UA, "Accept-Encoding": "gzip, deflate"}
RATIO_GOAL, P99_GOAL_MS = 0.3, 150.0
# The set-up requests may wait for the scheduler's first tick (its catch-up over the demo data).
SETUP_TIMEOUT = 120
CSRF_RE = re.compile(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"')


@dataclass
class Scenario:
    name: str
    method: str
    path: str  # "%s" is replaced by a random token from ``tokens``
    tokens: list[str] = field(default_factory=list)
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    goals: tuple[str, ...] = ("errors",)  # which of ratio / p99 / errors apply


@dataclass
class Run:
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float
    kinds: str = ""  # which errors (wrk: connect, read, write, status, timeout), when there were any

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


# --- the database ------------------------------------------------------------------------

def build_database(url: str, candidates: int, env: dict[str, str]) -> None:
    """Migrate and fill the database with the project's own commands."""
    flask = [str(BIN / "flask"), "--app", "milo_portal"]
    subprocess.run(flask + ["db", "upgrade"], env=env, cwd=ROOT, check=True, capture_output=True)
    started = time.monotonic()
    done = subprocess.run(flask + ["milo", "demo-data", "--candidates", str(candidates)], env=env, cwd=ROOT,
                          check=True, capture_output=True, text=True)
    print(f"database: {done.stdout.strip().splitlines()[-1]} ({time.monotonic() - started:.0f} s with the team)")


def send_backlog(url: str, env: dict[str, str]) -> None:
    """Plan and send what the demo history makes due, at full speed, with the project's dispatch.

    The history has no outbox: the first ticks plan a follow-up for every candidate who is
    owed one (about 30,000 at 100,000 candidates, 5,000 per rule per tick) and send those
    already due. At the default 1,200 e-mails a minute a server's scheduler would spend the
    whole run on that; the runs measure the pages with the scheduler on and the backlog
    done (``--backlog keep`` measures them while the scheduler works through it).
    """
    before = outbox_counts(url)
    flask = [str(BIN / "flask"), "--app", "milo_portal"]
    fast = env | {"MILO_RATE_EMAIL": "1000000", "MILO_RATE_SMS": "1000000", "MILO_RATE_WHATSAPP": "1000000"}
    started, passes, after = time.monotonic(), 0, None
    # A pass plans at most 5,000 follow-ups per rule (the planner's own limit, so a tick stays
    # short): repeat until a pass changes nothing, as the ticks of a running server would.
    while passes < 40:
        subprocess.run(flask + ["milo", "dispatch"], env=fast, cwd=ROOT, check=True, capture_output=True)
        passes += 1
        now_counts = outbox_counts(url)
        if now_counts == after:
            break
        after = now_counts
    print(f"backlog planned and sent before the runs in {time.monotonic() - started:.0f} s ({passes} passes): "
          f"outbox {before} -> {after}")


def has_candidates(url: str) -> bool:
    """Whether the database is already migrated and filled (to reuse it)."""
    engine = create_engine(normalise_database_url(url))
    try:
        if "candidate" not in inspect(engine).get_table_names():
            return False
        with engine.connect() as conn:
            return bool(conn.scalar(text("SELECT COUNT(*) FROM candidate")))
    finally:
        engine.dispose()


def empty_or_reset(url: str, reset: bool) -> None:
    """Refuse a database that has tables, unless --reset says it may be emptied."""
    engine = create_engine(normalise_database_url(url))
    try:
        if not inspect(engine).get_table_names():
            return
        if not reset:
            sys.exit(f"{url} has tables: give an empty database, or --reset to empty this one first")
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    finally:
        engine.dispose()


def pick_tokens(url: str, sample: int, seed: int) -> dict[str, list[str]]:
    """Random real tokens per use: landing (not started yet) and started candidates; share links."""
    engine = create_engine(normalise_database_url(url))
    with engine.connect() as conn:
        def tokens(sql: str) -> list[str]:
            found = list(conn.scalars(text(sql)))
            random.Random(seed).shuffle(found)
            return found[:sample]

        # The demo gives every candidate still in progress a deadline ahead of them.
        live = "agent_id IN (SELECT id FROM agent WHERE archived_at IS NULL)"
        picked = {
            "landing": tokens(f"SELECT token FROM candidate WHERE stage IN ('invited', 'opened', 'clicked') AND {live}"),
            "started": tokens(f"SELECT token FROM candidate WHERE stage = 'started' AND {live}"),
            "share": tokens("SELECT share_token FROM agent WHERE share_enabled AND archived_at IS NULL"),
        }
    engine.dispose()
    for name, found in picked.items():
        if not found:
            sys.exit(f"no {name} tokens in the demo data: use more --candidates")
    return picked


def outbox_counts(url: str) -> str:
    engine = create_engine(normalise_database_url(url))
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT status, COUNT(*) FROM message GROUP BY status ORDER BY status")).all()
    engine.dispose()
    return ", ".join(f"{status} {count}" for status, count in rows) or "no messages"


# --- talking to the server ------------------------------------------------------------------

def call(port: int, method: str, path: str, headers: dict | None = None, body: str | None = None,
         timeout: float = SETUP_TIMEOUT):
    """One request on its own connection: (status, headers, raw body, bytes on the wire)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        raw = response.read()
        head = f"HTTP/1.1 {response.status} {response.reason}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in response.getheaders()) + "\r\n"
        return response.status, response.headers, raw, len(head.encode("latin-1")) + len(raw)
    finally:
        conn.close()


def session_cookie(headers) -> str:
    for value in headers.get_all("Set-Cookie") or []:
        if value.startswith("milo_session="):
            return value.split(";", 1)[0]
    raise RuntimeError("the server set no session cookie")


def wait_until_up(port: int, process: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("gunicorn exited at start: see its log")
        try:
            if call(port, "GET", BARE, timeout=5)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"gunicorn did not answer within {timeout:.0f} s")


def first_load(port: int, token: str) -> None:
    """Bytes a browser transfers for a candidate link's first visit, with and without gzip."""
    sizes = {}
    for label, encoding in (("gzip", "gzip, deflate"), ("no gzip", "identity")):
        status, headers, raw, total = call(port, "GET", f"/i/{token}", {"User-Agent": UA, "Accept-Encoding": encoding})
        html = raw
        if headers.get("Content-Encoding") == "gzip":
            html = gzip.decompress(raw)
        assets = re.findall(r'<(?:link rel="stylesheet" href|script[^>]* src)="([^"]+)"', html.decode())
        parts = [f"HTML {total:,} B"]
        for asset in assets:
            asset_total = call(port, "GET", asset, {"User-Agent": UA, "Accept-Encoding": encoding})[3]
            parts.append(f"{asset} {asset_total:,} B")
            total += asset_total
        sizes[label] = total
        print(f"first load of /i/<token> ({label}): {total:,} B in {1 + len(assets)} requests ({'; '.join(parts)})")
    print(f"first load goal: <= 20,480 B with gzip: {'met' if sizes['gzip'] <= 20 * 1024 else 'NOT met'}")


def log_in(port: int) -> str:
    """Log in as the demo recruiter; return the session cookie."""
    status, headers, raw, _ = call(port, "GET", "/login", BROWSER | {"Accept-Encoding": "identity"})
    cookie, csrf = session_cookie(headers), CSRF_RE.search(raw.decode()).group(1)
    form = f"email={quote(TEAM[0][1])}&password={quote(DEMO_PASSWORD)}&csrf_token={quote(csrf)}"
    status, headers, _, _ = call(port, "POST", "/login", {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"}, form)
    if status != 302:
        raise RuntimeError(f"demo login failed ({status})")
    return session_cookie(headers)


# --- load generators -------------------------------------------------------------------------

def run_wrk(port: int, scenario: Scenario, seconds: float, concurrency: int, threads: int, workdir: Path) -> Run:
    tokens_file = "-"
    if scenario.tokens:
        tokens_file = str(workdir / f"tokens-{scenario.name}.txt")
        if not os.path.exists(tokens_file):
            Path(tokens_file).write_text("\n".join(scenario.tokens) + "\n")
    headers = [f"{k}: {v}" for k, v in (BROWSER | scenario.headers).items()]
    cmd = ["wrk", "-t", str(threads), "-c", str(concurrency), "-d", f"{seconds:g}s", "--timeout", "30s",
           "-s", str(ROOT / "bench" / "load.lua"), f"http://{HOST}:{port}",
           "--", tokens_file, scenario.path, scenario.method, scenario.body, *headers]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    summary = json.loads(out.strip().splitlines()[-1])
    kinds = ("connect", "read", "write", "status", "timeout")
    errors = sum(summary[k] for k in kinds)
    return Run(summary["requests"], summary["duration_us"] / 1e6, errors, summary["p50_us"] / 1000, summary["p99_us"] / 1000,
               ", ".join(f"{k} {summary[k]}" for k in kinds if summary[k]))


def run_python(port: int, scenario: Scenario, seconds: float, concurrency: int, threads: int, workdir: Path) -> Run:
    """Fallback when wrk is missing: threads with keep-alive connections (slower: it shares the CPU)."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    headers = BROWSER | scenario.headers

    def worker(seed: int) -> None:
        rng, conn, mine, bad = random.Random(seed), None, [], 0
        while time.monotonic() < deadline:
            token = rng.choice(scenario.tokens) if scenario.tokens else ""
            body = scenario.body.replace("%s", token) if scenario.body else None
            t = time.perf_counter()
            try:
                conn = conn or http.client.HTTPConnection(HOST, port, timeout=30)
                conn.request(scenario.method, scenario.path.replace("%s", token), body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status >= 400:
                    bad += 1
                mine.append(time.perf_counter() - t)
            except (OSError, http.client.HTTPException):
                bad += 1
                conn = None
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    started = time.monotonic()
    pool = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.monotonic() - started
    latencies.sort()
    pick = (lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000) if latencies else (lambda q: 0.0)
    return Run(len(latencies), elapsed, errors[0], pick(0.5), pick(0.99))


# --- the report ------------------------------------------------------------------------------

def report(scenarios: list[Scenario], results: dict[str, list[tuple[Run, Run]]]) -> bool:
    print("\nscenario        req/s med (min)   p50 ms   p99 ms med (max)  errors   ratio to bare min / median   goals")
    all_met = True
    for s in scenarios:
        pairs = results[s.name]
        rps = [r.rps for _, r in pairs]
        ratios = [r.rps / b.rps if b.rps else 0.0 for b, r in pairs]
        p50 = statistics.median(r.p50_ms for _, r in pairs)
        p99 = [r.p99_ms for _, r in pairs]
        errors = sum(r.errors for _, r in pairs)
        checks = []
        if "ratio" in s.goals:
            checks.append(("ratio", statistics.median(ratios) >= RATIO_GOAL, f">= {RATIO_GOAL}"))
        if "p99" in s.goals:
            checks.append(("p99", statistics.median(p99) < P99_GOAL_MS, f"< {P99_GOAL_MS:.0f} ms"))
        checks.append(("errors", errors == 0, "= 0"))
        met = all(ok for _, ok, _ in checks)
        all_met &= met
        goals = ", ".join(f"{name} {want} {'ok' if ok else 'MISSED'}" for name, ok, want in checks)
        print(f"{s.name:14s} {statistics.median(rps):9.0f} ({min(rps):6.0f}) {p50:8.1f} {statistics.median(p99):8.1f}"
              f" ({max(p99):7.1f}) {errors:7d}   {min(ratios):11.3f} / {statistics.median(ratios):.3f}       {goals}")
    bare = [b for pairs in results.values() for b, _ in pairs]
    print(f"bare endpoint: {statistics.median(b.rps for b in bare):.0f} req/s median over {len(bare)} runs "
          f"(min {min(b.rps for b in bare):.0f}), p99 {statistics.median(b.p99_ms for b in bare):.1f} ms, "
          f"errors {sum(b.errors for b in bare)}")
    return all_met


def settle(run: Run) -> None:
    """Let the requests still queued in the server when the client stopped finish before the next run."""
    time.sleep(min(3.0, 0.2 + run.p99_ms / 1000))


def load_average() -> str:
    return "load average %.1f %.1f %.1f" % os.getloadavg()


def _interrupted(signum, frame):
    raise KeyboardInterrupt


def beside_create(args, port: int, url: str, env: dict[str, str], drive, pages: list[Scenario],
                  results: dict[str, list[tuple[Run, Run]]], workdir: Path) -> bool:
    """Drive the candidate pages while another process creates a large bulk batch; True if goals met."""
    if not pages:
        print("beside the create: choose landing and/or question in --scenarios")
        return False
    print(f"beside the create: uploading, reviewing and creating {args.beside_create:,} rows in a second process")
    creator = subprocess.Popen([sys.executable, str(ROOT / "bench" / "create_batch.py"), "--database-url", url,
                                "--rows", str(args.beside_create), "--folder", str(workdir / "uploads")],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = ""
    while creator.poll() is None and line.strip() != "creating":
        line = creator.stdout.readline()
    during: dict[str, list[Run]] = {s.name: [] for s in pages}
    seconds = min(args.duration, 5)
    while creator.poll() is None:
        for s in pages:
            run = drive(port, s, seconds, args.concurrency, args.threads, workdir)
            during[s.name].append(run)
            print(f"  during the create {s.name:9s} {run.rps:7.0f} req/s  p50 {run.p50_ms:7.1f} ms  "
                  f"p99 {run.p99_ms:7.1f} ms  errors {run.errors:5d}", flush=True)
            if creator.poll() is not None:
                break
    output = creator.stdout.read().strip().splitlines()
    figures = json.loads(output[-1]) if output and output[-1].startswith("{") else None
    if creator.returncode != 0 or figures is None:
        print(f"beside the create: the create failed (exit {creator.returncode}): {' | '.join(output[-5:])}")
        return False
    print(f"  the create: {figures['created']:,} created in {figures['create_s']} s "
          f"({figures['created'] / figures['create_s']:.0f} rows/s; review {figures['review_s']} s before it), "
          f"{figures['chunks']} chunks, longest {figures['chunk_max_ms']} ms")
    met = True
    for s in pages:
        runs = during[s.name]
        if not runs:
            print(f"  {s.name}: the create ended before a run could be measured (use more rows)")
            met = False
            continue
        without = statistics.median(r.p99_ms for _, r in results[s.name])
        worst = max(r.p99_ms for r in runs)
        errors = sum(r.errors for r in runs)
        ok = errors == 0 and worst <= 2 * without
        met = met and ok
        print(f"  {s.name:9s} during the create: {statistics.median(r.rps for r in runs):5.0f} req/s median, "
              f"p99 max {worst:6.1f} ms vs {without:6.1f} ms without ({worst / without if without else 0:.2f}x), "
              f"errors {errors}   goal: p99 <= 2x, errors = 0: {'met' if ok else 'MISSED'}")
    return met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=16, help="open connections (default 16)")
    parser.add_argument("--duration", type=float, default=10, help="seconds per run (default 10)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1: leave the cores to the server)")
    parser.add_argument("--database-url", help="an empty database (PostgreSQL, or a SQLite file; default: SQLite in a temp folder)")
    parser.add_argument("--reset", action="store_true", help="empty the --database-url database first")
    parser.add_argument("--reuse", action="store_true",
                        help="use the --database-url database as it is when it already has candidates")
    parser.add_argument("--backlog", choices=("send", "keep"), default="send",
                        help="send the overdue messages of the demo history before the runs (default), "
                             "or keep them for the server's scheduler to send during the runs")
    parser.add_argument("--scenarios", default="landing,question,answer,share,candidates")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (database, logs)")
    parser.add_argument("--beside-create", type=int, default=0, metavar="N",
                        help="then drive the candidate pages while an N-row bulk batch is created")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress shows as it comes, in a terminal or a file

    workdir = Path(tempfile.mkdtemp(prefix="milo-load-"))
    url = args.database_url or f"sqlite:///{workdir / 'bench.sqlite3'}"
    reuse = bool(args.database_url and args.reuse and has_candidates(url))
    if args.database_url and not reuse:
        empty_or_reset(url, args.reset)
    sink = SmtpSink().start()
    port = free_port()
    env = os.environ | {
        "MILO_DATABASE_URL": url, "MILO_SECRET_KEY": "load-bench-secret-key", "MILO_SCHEDULER": "true",
        "MILO_PUBLIC_BASE_URL": f"http://{HOST}:{port}", "MILO_BIND": f"{HOST}:{port}",
        "MAIL_SERVER": HOST, "MAIL_PORT": str(sink.port), "MAIL_DEFAULT_SENDER": "jobs@acme.example",
        "MILO_SMS_BACKEND": "console",
    }
    gunicorn = None
    log = open(workdir / "gunicorn.log", "w")
    signal.signal(signal.SIGTERM, _interrupted)  # a kill ends in the finally below too, which stops gunicorn
    try:
        if reuse:
            print(f"database: reused, migrated to the code's schema ({url.split('@')[-1]})")
            subprocess.run([str(BIN / "flask"), "--app", "milo_portal", "db", "upgrade"], env=env, cwd=ROOT,
                           check=True, capture_output=True)
        else:
            build_database(url, args.candidates, env)
        if args.backlog == "send":
            send_backlog(url, env)
        tokens = pick_tokens(url, 5000, seed=1)
        gunicorn = subprocess.Popen(
            [str(BIN / "gunicorn"), "-c", str(ROOT / "gunicorn.conf.py"), "bench.load_wsgi:app"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until_up(port, gunicorn)
        probe = tokens["landing"].pop()
        try:
            first_load(port, probe)
        except OSError as err:
            print(f"first load of /i/<token>: not measured ({err!r})")

        admin = log_in(port)
        # The candidate's forms carry no cookie and no CSRF token: the link token is enough.
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        public = ("ratio", "p99", "errors")
        chosen = set(args.scenarios.split(","))
        scenarios = [s for s in (
            Scenario("landing", "GET", "/i/%s", tokens["landing"], goals=public),
            Scenario("question", "GET", "/i/%s/q/1", tokens["started"], goals=public),
            Scenario("answer", "POST", "/i/%s/q/1", tokens["started"],
                     body="answer=Night+shifts+suit+me+and+I+live+nearby.", headers=form,
                     goals=public),
            Scenario("share", "GET", "/s/%s", tokens["share"], goals=("p99", "errors")),
            Scenario("candidates", "GET", "/candidates", headers={"Cookie": admin}),
        ) if s.name in chosen]
        bare = Scenario("bare", "GET", BARE)

        use_wrk = shutil.which("wrk") is not None
        drive = run_wrk if use_wrk else run_python
        driver = "wrk" if use_wrk else "a Python thread client (wrk not found: figures are capped by the client)"
        conf = runpy.run_path(str(ROOT / "gunicorn.conf.py"))  # what gunicorn read, from the same environment
        print(f"server: gunicorn ({conf['workers']} workers x {conf['threads']} threads, "
              f"scheduler on) on {HOST}:{port}; database {url.split('@')[-1]}")
        print(f"machine: {os.cpu_count()} cores, {load_average()} before the runs (other work skews absolute figures)")
        print(f"load: {driver}, {args.concurrency} connections, {args.duration:g} s per run, {args.rounds} rounds, "
              "each scenario right after a bare run")
        for s in [bare, *scenarios]:  # warm-up, not counted: every worker has rendered every page once
            settle(drive(port, s, 2, args.concurrency, args.threads, workdir))
        print(f"outbox before the runs: {outbox_counts(url)}")
        results: dict[str, list[tuple[Run, Run]]] = {s.name: [] for s in scenarios}
        for number in range(1, args.rounds + 1):
            for s in scenarios:
                floor = drive(port, bare, args.duration, args.concurrency, args.threads, workdir)
                settle(floor)
                run = drive(port, s, args.duration, args.concurrency, args.threads, workdir)
                settle(run)
                results[s.name].append((floor, run))
                print(f"round {number} {s.name:11s} {run.rps:7.0f} req/s  p50 {run.p50_ms:7.1f} ms  "
                      f"p99 {run.p99_ms:7.1f} ms  errors {run.errors:5d} | bare {floor.rps:6.0f} req/s  "
                      f"ratio {run.rps / floor.rps if floor.rps else 0:.3f}"
                      + (f"  ({run.kinds}; status: non-2xx/3xx answers)" if run.kinds else ""), flush=True)
        met = report(scenarios, results)
        if args.beside_create:
            met = beside_create(args, port, url, env, drive, [s for s in scenarios if s.name in ("landing", "question")],
                                results, workdir) and met
        print(f"machine: {load_average()} after the runs")
        print(f"outbox after the run (the scheduler's work): {outbox_counts(url)}; "
              f"the SMTP sink received {len(sink.messages)}")
        print("all goals met" if met else "some goals missed")
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted")
        return 130
    finally:
        if gunicorn is not None and gunicorn.poll() is None:
            os.killpg(gunicorn.pid, signal.SIGTERM)
            try:
                gunicorn.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(gunicorn.pid, signal.SIGKILL)
                gunicorn.wait()
        sink.stop()
        log.close()
        if args.keep:
            print(f"kept {workdir} (database and gunicorn.log)")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""Demo data so a new installation can be tried at once (``flask milo demo-data``)."""
from __future__ import annotations

import random
from datetime import timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from .agents.services import AgentData, create_agent, suggested_channel
from .auth.services import create_user
from .models import Agent, User

DEMO_PASSWORD = "demo-password-1"
TEAM = [
    ("Dana Recruiter", "dana@demo.milo.test"),
    ("Sam Sourcer", "sam@demo.milo.test"),
]
AGENTS = [
    ("Warehouse associate", "entry", 10, 5, [
        "Tell us about a time you worked a busy shift. What kept you going?",
        "Which shifts can you work (early, late, nights, weekends)?",
        "How would you get to our site in Riverside?",
    ]),
    ("Customer support specialist", "professional", 15, 7, [
        "Walk us through how you calm down an upset customer.",
        "Describe a support process you improved. What changed?",
        "Why do you want to work in support at Acme?",
        "What would your last manager say you should work on?",
    ]),
    ("Senior backend engineer", "senior", 25, 10, [
        "Describe a system you designed that had to survive failures. What broke, and how did you find out?",
        "How do you decide when to pay down technical debt?",
        "Tell us about a disagreement with a colleague on a technical decision and how it ended.",
    ]),
]


def create_demo_data(session: Session, seed: int = 1) -> str:
    """Create the demo team and agents if they are not there yet; return a summary line."""
    rng = random.Random(seed)
    users = []
    for name, email in TEAM:
        user = session.scalar(select(User).where(User.email == email))
        users.append(user or create_user(session, email, name, DEMO_PASSWORD))
    made = 0
    for title, level, minutes, days, questions in AGENTS:
        if session.scalar(select(Agent.id).where(Agent.title == title)) is not None:
            continue
        create_agent(session, AgentData(
            title=title, company="Acme Logistics", role_level=level,
            description=f"Acme is hiring a {title.lower()}. This short interview replaces the first phone call.",
            duration_minutes=minutes, deadline_days=days,
            default_channel=suggested_channel(level), external_url=None,
            owner_id=rng.choice(users).id,
        ), questions)
        made += 1
    return (f"Demo team: {', '.join(e for _, e in TEAM)} (password {DEMO_PASSWORD}); "
            f"{made} new interview agent(s).")


FIRST = ["Ada", "Grace", "Alan", "Maya", "Sam", "Noor", "Luis", "Mei", "Ivan", "Zara", "Tom", "Priya", "Kofi",
         "Elena", "Omar", "Hana", "Jonas", "Aisha", "Diego", "Lena"]
LAST = ["Lovelace", "Hopper", "Turing", "Okafor", "Nguyen", "Silva", "Kowalski", "Haddad", "Tanaka", "Müller",
        "Patel", "Johansson", "Mensah", "Rossi", "Kim", "Dubois", "Novak", "Ortiz", "Ali", "Berg"]
ZONES = ["America/New_York", "America/Chicago", "America/Los_Angeles", "Europe/London", "Europe/Berlin",
         "Asia/Tokyo", "Asia/Kolkata", "Australia/Sydney"]
# Where candidates stop, roughly as in real funnels.
STAGE_WEIGHTS = [("added", 3), ("invited", 14), ("opened", 8), ("clicked", 10), ("started", 12),
                 ("completed", 38), ("expired", 12), ("opted_out", 3)]
SOURCE_WEIGHTS = [("manual", 20), ("bulk", 25), ("share_link", 30), ("api", 8), ("ats", 12), ("indeed", 5)]
CHANNEL_WEIGHTS = [("email", 60), ("sms", 25), ("whatsapp", 10), ("link", 5)]
DEVICE_WEIGHTS = [("mobile", 62), ("desktop", 30), ("tablet", 8)]
SHARE_SOURCES = ["linkedin", "indeed", "careers-page", "flyer", "referral", None]


def _pick(rng: random.Random, weighted):
    values, weights = zip(*weighted)
    return rng.choices(values, weights)[0]


class _BulkWriter:
    """Inserts demo rows the fastest way each database offers, inside the session's transaction.

    SQLite: the driver's executemany with timestamps already in the text form SQLAlchemy
    stores (no per-value type processing); PostgreSQL: COPY. Either way every trigger on
    the tables runs, so maintained counts and search indexes include the demo rows.
    """

    def __init__(self, session: Session) -> None:
        self.session = session
        self.postgresql = session.get_bind().dialect.name == "postgresql"

    def stamp(self, value):
        """A UTC datetime in the form this database's driver takes for a naive UTC column."""
        if value is None:
            return None
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value if self.postgresql else value.strftime("%Y-%m-%d %H:%M:%S.%f")

    def insert(self, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
        """Insert rows (tuples in the order of ``columns``) into ``table``."""
        if not rows:
            return
        names = ", ".join(columns)
        connection = self.session.connection()  # the session's transaction, begun if need be
        if self.postgresql:
            cursor = connection.connection.driver_connection.cursor()
            with cursor, cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join("?" * len(columns))
            connection.exec_driver_sql(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)


CANDIDATE_COLUMNS = (
    "id", "agent_id", "name", "email", "phone", "timezone", "source", "source_detail", "channel", "token",
    "stage", "deadline_at", "opted_out_email", "opted_out_sms", "opted_out_whatsapp", "device_class",
    "invited_at", "clicked_at", "started_at", "completed_at", "last_activity_at", "created_at", "updated_at")
EVENT_COLUMNS = ("candidate_id", "agent_id", "type", "at", "device_class", "channel")
ANSWER_COLUMNS = ("candidate_id", "question_id", "position", "question_text", "body", "answered_at")


def create_demo_candidates(session: Session, count: int, seed: int, now) -> int:
    """Add ``count`` candidates across all stages, sources and channels, with events and answers.

    Candidates arrive over the last 45 days in id order, as they would in real use. Written
    in batches of 20,000 with bulk inserts: a million candidates (about 5 million events and
    2 million answers) take a few minutes; see README.
    """
    import secrets
    from datetime import timedelta

    from sqlalchemy import func, text

    from .candidates import tally
    from .models import Candidate

    rng = random.Random(seed)
    agents = session.scalars(select(Agent).where(Agent.archived_at.is_(None))).all()
    if not agents or count <= 0:
        return 0
    questions = {a.id: [(q.id, q.text) for q in a.questions] for a in agents}
    next_id = (session.scalar(select(func.max(Candidate.id))) or 0) + 1
    order = {s: i for i, s in enumerate(["added", "invited", "opened", "clicked", "started", "completed"])}
    steps = (("invited", 0.2), ("opened", 3), ("clicked", 6), ("started", 0.5), ("completed", 0.4))
    span = timedelta(days=45)
    first = now - span
    writer = _BulkWriter(session)
    stamp = writer.stamp
    made = 0
    batch = 20_000
    while made < count:
        candidates, events, answers = [], [], []
        for _ in range(min(batch, count - made)):
            cid = next_id
            next_id += 1
            agent = rng.choice(agents)
            stage = _pick(rng, STAGE_WEIGHTS)
            source = _pick(rng, SOURCE_WEIGHTS)
            channel = _pick(rng, CHANNEL_WEIGHTS)
            device = _pick(rng, DEVICE_WEIGHTS)
            zone = rng.choice(ZONES)
            created = first + span * ((made + len(candidates) + rng.random()) / count)
            reached = {"expired": rng.choice(["invited", "clicked", "started"]),
                       "opted_out": rng.choice(["invited", "opened"])}.get(stage, stage)
            level = order[reached]
            t = created
            stamps = {}
            ev = [("added", created, None, None)]
            for name, gap in steps:
                if order[name] <= level:
                    t = t + timedelta(hours=rng.expovariate(1 / gap))
                    stamps[name] = t
                    ev.append((name, t, device if name == "clicked" else None,
                               channel if name in ("invited", "opened") else None))
            if stage in ("expired", "opted_out"):
                t = t + timedelta(days=rng.uniform(1, 7))
                ev.append((stage, t, None, channel))
            deadline = created + timedelta(days=agent.deadline_days)
            if stage == "expired":
                deadline = min(deadline, t)
            elif stage not in ("completed", "opted_out"):
                # Still in progress: their deadline is ahead of them.
                deadline = max(deadline, now + timedelta(days=rng.uniform(0.5, agent.deadline_days)))
            name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
            candidates.append((
                cid, agent.id, name, f"demo{cid}@candidates.milo.test",
                f"+1415555{cid % 10000:04d}" if channel in ("sms", "whatsapp") else None,
                zone, source, rng.choice(SHARE_SOURCES) if source == "share_link" else None,
                channel, secrets.token_urlsafe(24), stage, stamp(deadline),
                stage == "opted_out" and channel == "email", stage == "opted_out" and channel == "sms",
                stage == "opted_out" and channel == "whatsapp", device if "clicked" in stamps else None,
                stamp(stamps.get("invited")), stamp(stamps.get("clicked")), stamp(stamps.get("started")),
                stamp(stamps.get("completed")), stamp(t) if len(ev) > 1 else None, stamp(created), stamp(t),
            ))
            for etype, at, dev, ch in ev:
                events.append((cid, agent.id, etype, stamp(at), dev, ch))
            if "started" in stamps:
                asked = questions[agent.id]
                answered = len(asked) if "completed" in stamps else rng.randint(0, len(asked))
                for pos, (qid, qtext) in enumerate(asked[:answered], start=1):
                    at = stamp(stamps["started"] + timedelta(minutes=3 * pos))
                    answers.append((cid, qid, pos, qtext, f"Demo answer {pos} from {name}.", at))
                    events.append((cid, agent.id, "answered", at, None, None))
        writer.insert("candidate", CANDIDATE_COLUMNS, candidates)
        writer.insert("event", EVENT_COLUMNS, events)
        writer.insert("answer", ANSWER_COLUMNS, answers)
        # The count triggers appended a row per candidate (SQLite): fold them as we go.
        tally.fold(session)
        session.commit()
        made += len(candidates)
    if writer.postgresql:
        # Explicit ids were used: move the sequence past them.
        session.execute(text("SELECT setval(pg_get_serial_sequence('candidate', 'id'), (SELECT max(id) FROM candidate))"))
        session.commit()
    return made

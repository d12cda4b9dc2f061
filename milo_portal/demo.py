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


def real_logins(session: Session) -> list[str]:
    """The e-mail addresses of the logins that are not the demo team's."""
    return list(session.scalars(select(User.email).where(User.email.not_in([e for _, e in TEAM]))
                                .order_by(User.id).limit(10)))


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
    "invited_at", "clicked_at", "visited_at", "started_at", "completed_at", "last_activity_at", "created_at",
    "updated_at")
EVENT_COLUMNS = ("candidate_id", "agent_id", "type", "at", "device_class", "channel", "message_id")
ANSWER_COLUMNS = ("candidate_id", "question_id", "position", "question_text", "body", "answered_at")
MESSAGE_COLUMNS = ("id", "candidate_id", "kind", "step", "channel", "variant", "status", "scheduled_for",
                   "attempts", "last_error", "sent_at", "created_at", "manual", "immediate")

# How people behave, so the Metrics page has something to say (and its red flags fire):
# clicks differ by channel and invite variant (B's subject line does better on e-mail),
# starts by device, one question of the support interview loses many (more on phones),
# Friday invites do worse, one company domain bounces, some invites go out days late.
# Only reserved names (RFC 2606 ``.example``) and fictional numbers (NANP 555-0100 to 555-0199):
# a demo history loaded into an installation whose scheduler sends can never reach a person.
DOMAINS = [("gmail.example", 40), ("outlook.example", 25), ("yahoo.example", 10), ("corp-mail.example", 8),
           ("acme-partners.example", 17)]
AREA_CODES = ("201", "212", "305", "312", "415", "503", "617", "702", "713", "818")
BOUNCE = {"corp-mail.example": 0.50}
CLICK = {"email": 0.42, "sms": 0.58, "whatsapp": 0.70, "link": 0.85}
START = {"desktop": 0.90, "tablet": 0.84, "mobile": 0.76}
OPEN = 0.62           # a person opens the e-mail (with the pixel on)
MACHINE_OPEN = 0.35   # Apple Mail Privacy Protection and image proxies
SCANNER_VISIT = 0.20  # mail gateways fetch the link
LATE_INVITE = 0.12
SEND_NOW = 0.10       # invites sent at once, whatever the hour
FRIDAY_BATCH = 0.15   # invites a recruiter saves up and sends on Friday afternoon
PHONE_LEAVE = 2.5     # leaving a question is this much likelier on a phone
OPT_OUT = 0.015
LEAVE = 0.03          # per question
HARD_QUESTION = (1, 2, 0.20)  # (agent index, question position, chance to leave there)


def demo_phone(cid: int) -> str:
    """A fictional number (555-0100 to 555-0199 in one of a few area codes) for demo candidate ``cid``."""
    return f"+1{AREA_CODES[cid // 100 % len(AREA_CODES)]}55501{cid % 100:02d}"


def _in_window(t, zone, rng: random.Random):
    """The next moment from ``t`` inside 09:00–18:00 Monday–Friday in ``zone`` (as the dispatcher does)."""
    from datetime import datetime, time, timedelta

    local = t.astimezone(zone)
    day = local.date()
    if local.hour >= 18:
        day += timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    if day != local.date() or local.hour < 9:
        start = datetime.combine(day, time(9), tzinfo=zone) + timedelta(minutes=rng.uniform(0, 90))
        return start.astimezone(timezone.utc)
    return t


def create_demo_candidates(session: Session, count: int, seed: int, now, days: int = 45) -> int:
    """Add ``count`` candidates over the last ``days`` days, with their events, messages and answers.

    Each candidate goes through the funnel with chances that differ by channel, device,
    weekday, question and invite variant (see the constants above), so a new installation
    shows a full Metrics page. Candidates arrive in id order, as in real use. Written in
    batches of 20,000 with bulk inserts: a million candidates take a few minutes; see README.
    """
    import secrets
    from datetime import timedelta
    from zoneinfo import ZoneInfo

    from sqlalchemy import func, text

    from .candidates import tally
    from .models import Candidate, Message

    rng = random.Random(seed)
    agents = session.scalars(select(Agent).where(Agent.archived_at.is_(None)).order_by(Agent.id)).all()
    if not agents or count <= 0:
        return 0
    _ensure_demo_variants(session)
    questions = {a.id: [(q.id, q.text) for q in a.questions] for a in agents}
    hard = {agents[HARD_QUESTION[0]].id: HARD_QUESTION[1]} if len(agents) > HARD_QUESTION[0] else {}
    zones = {name: ZoneInfo(name) for name in ZONES}
    next_id = (session.scalar(select(func.max(Candidate.id))) or 0) + 1
    next_message = (session.scalar(select(func.max(Message.id))) or 0) + 1
    span = timedelta(days=days)
    first = now - span
    writer = _BulkWriter(session)
    stamp = writer.stamp
    made = 0
    batch = 20_000
    while made < count:
        candidates, events, answers, messages = [], [], [], []
        for _ in range(min(batch, count - made)):
            cid = next_id
            next_id += 1
            agent = rng.choice(agents)
            source = _pick(rng, SOURCE_WEIGHTS)
            channel = _pick(rng, CHANNEL_WEIGHTS)
            device = _pick(rng, DEVICE_WEIGHTS)
            zone_name = rng.choice(ZONES)
            zone = zones[zone_name]
            domain = _pick(rng, DOMAINS)
            created = first + span * ((made + len(candidates) + rng.random()) / count)
            ev: list[tuple] = [("added", created, None, None, None)]
            t = {"invited": None, "clicked": None, "visited": None, "started": None, "completed": None}
            stage = "added"
            opted_out = False
            last = created

            def happen(name, at, device_class=None, ch=None, message=None):
                ev.append((name, at, device_class, ch, message))

            def interview(start_at):
                """Started at ``start_at``: answers until they leave, run out of time, or finish."""
                nonlocal stage, last
                stage, last, t["started"] = "started", start_at, start_at
                happen("started", start_at)
                at = start_at
                for pos, (qid, qtext) in enumerate(questions[agent.id], start=1):
                    leave = HARD_QUESTION[2] if hard.get(agent.id) == pos else LEAVE
                    if device == "mobile":
                        leave *= PHONE_LEAVE
                    at = at + timedelta(minutes=rng.expovariate(1 / (8 if leave > LEAVE * 2 else 3)))
                    if rng.random() < leave or at >= now:
                        break
                    answers.append((cid, qid, pos, qtext, f"Demo answer {pos}.", stamp(at)))
                    happen("answered", at)
                    last = at
                else:
                    stage, t["completed"] = "completed", at
                    happen("completed", at)

            invited = created + (timedelta(hours=rng.uniform(24, 96)) if rng.random() < LATE_INVITE
                                 else timedelta(minutes=rng.expovariate(1 / 20)))
            if rng.random() > SEND_NOW:
                invited = _in_window(invited, zone, rng)
            if rng.random() < FRIDAY_BATCH:
                local = invited.astimezone(zone)
                friday = local + timedelta(days=(4 - local.weekday()) % 7)
                invited = friday.replace(hour=14, minute=rng.randrange(60)).astimezone(timezone.utc)
            if source == "share_link":
                # Came by the share link: its form makes them a candidate who has clicked and
                # started at once, never invited (their own link goes to the address they typed).
                channel = "email" if channel == "link" else channel
                stage, last, t["clicked"] = "clicked", created, created
                happen("clicked", created, device_class=device)
                interview(created)
            elif rng.random() >= 0.03 and invited < now:
                stage, last = "invited", invited
                t["invited"] = invited
                variant = "B" if channel in ("email", "sms") and rng.random() < 0.5 else "A"
                invite_id = next_message
                next_message += 1
                failed = channel != "link" and rng.random() < {"email": BOUNCE.get(domain, 0.015), "sms": 0.03,
                                                                "whatsapp": 0.01}[channel]
                messages.append((invite_id, cid, "invite", 1, channel, variant, "failed" if failed else "sent",
                                 stamp(invited), 1, "550 mailbox unavailable" if failed else None, stamp(invited),
                                 stamp(created), False, False))
                happen("invited", invited, ch=channel, message=invite_id)
                if failed:
                    happen("bounced" if channel == "email" else "failed", invited + timedelta(seconds=30),
                           ch=channel, message=invite_id)
                else:
                    if channel in ("sms", "whatsapp"):
                        happen("delivered", invited + timedelta(seconds=8), ch=channel, message=invite_id)
                    if channel == "email" and rng.random() < MACHINE_OPEN:
                        happen("machine_opened", invited + timedelta(seconds=5), ch=channel, message=invite_id)
                    if channel == "email" and rng.random() < SCANNER_VISIT:
                        t["visited"] = invited + timedelta(seconds=20)
                        happen("visited", t["visited"])
                    chance = CLICK[channel] * (1.25 if variant == "B" and channel == "email" else 1)
                    if invited.astimezone(zone).weekday() == 4:
                        chance *= 0.75  # Friday invites are read on Monday, under newer mail
                    opened = channel == "email" and rng.random() < OPEN
                    if opened:
                        at = invited + timedelta(hours=rng.expovariate(1 / 3))
                        if at < now:
                            stage, last = "opened", at
                            happen("opened", at, ch=channel, message=invite_id)
                        chance = min(0.95, chance / OPEN)
                    elif channel == "email":
                        chance *= 0.15  # clicked with images off
                    click_at = None
                    if rng.random() < chance:
                        click_at = invited + timedelta(hours=min(rng.expovariate(1 / 3), 23))
                    # Reminders to those who have not clicked after 24 h and 48 h; some click then.
                    for step, (after, helps) in enumerate(((24, 0.25), (48, 0.12)), start=1):
                        reminder_at = invited + timedelta(hours=after)
                        if (click_at is not None and click_at < reminder_at) or reminder_at >= now:
                            break
                        rid = next_message
                        next_message += 1
                        messages.append((rid, cid, "reminder", step, channel, "A", "sent", stamp(reminder_at), 1,
                                         None, stamp(reminder_at), stamp(reminder_at), False, False))
                        happen("reminded", reminder_at, ch=channel, message=rid)
                        if click_at is None and rng.random() < helps:
                            click_at = reminder_at + timedelta(hours=rng.expovariate(1 / 2))
                    if click_at is None and rng.random() < OPT_OUT:
                        at = invited + timedelta(hours=rng.expovariate(1 / 10))
                        if at < now:
                            stage, last, opted_out = "opted_out", at, True
                            happen("opted_out", at, ch=channel)
                    if click_at is not None and click_at < now and not opted_out:
                        stage, last, t["clicked"] = "clicked", click_at, click_at
                        happen("clicked", click_at, device_class=device)
                        start_at = click_at + timedelta(minutes=rng.expovariate(1 / 5))
                        if rng.random() < START[device] and start_at < now:
                            interview(start_at)
            deadline = (t["invited"] or created) + timedelta(days=agent.deadline_days)
            if stage in ("added", "invited", "opened", "clicked", "started") and deadline < now:
                stage, last = "expired", deadline
                happen("expired", deadline)
            name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
            candidates.append((
                cid, agent.id, name, f"demo{cid}@{domain}",
                demo_phone(cid) if channel in ("sms", "whatsapp") else None,
                zone_name, source, rng.choice(SHARE_SOURCES) if source == "share_link" else None,
                channel, secrets.token_urlsafe(24), stage, stamp(deadline),
                opted_out and channel == "email", opted_out and channel == "sms",
                opted_out and channel == "whatsapp", device if t["clicked"] else None,
                stamp(t["invited"]), stamp(t["clicked"]), stamp(t["visited"]), stamp(t["started"]),
                stamp(t["completed"]), stamp(last) if len(ev) > 1 else None, stamp(created), stamp(last),
            ))
            for etype, at, dev, ch, message in ev:
                events.append((cid, agent.id, etype, stamp(at), dev, ch, message))
        writer.insert("candidate", CANDIDATE_COLUMNS, candidates)
        writer.insert("message", MESSAGE_COLUMNS, messages)
        writer.insert("event", EVENT_COLUMNS, events)
        writer.insert("answer", ANSWER_COLUMNS, answers)
        # The count triggers appended a row per candidate (SQLite): fold them as we go.
        tally.fold(session)
        session.commit()
        made += len(candidates)
    if writer.postgresql:
        # Explicit ids were used: move the sequences past them.
        for table in ("candidate", "message"):
            session.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                 f"(SELECT coalesce(max(id), 1) FROM {table}))"))
        session.commit()
    return made


def _ensure_demo_variants(session: Session) -> None:
    """The shipped templates, and a second e-mail invite (B, another subject line) to compare."""
    from .messaging.services import ensure_default_templates
    from .models import Template, TemplateVersion

    ensure_default_templates(session)
    if session.scalar(select(Template.id).where(Template.kind == "invite", Template.channel == "email",
                                                Template.variant == "B")) is None:
        first = session.scalar(select(Template).where(Template.kind == "invite", Template.channel == "email",
                                                      Template.variant == "A"))
        version = first.versions[-1] if first is not None and first.versions else None
        variant = Template(kind="invite", channel="email", variant="B", weight=1, active=True)
        variant.versions.append(TemplateVersion(
            number=1, subject="{{ candidate.first_name }}, your 10-minute interview for {{ role }}",
            body=version.body if version is not None else "Start here: {{ link }}"))
        session.add(variant)
    session.commit()

"""Bulk upload: read the files, guess the columns, review every row, create in chunks, undo.

The life of a batch (``ImportBatch``): ``review`` (files read into a temporary folder,
nothing created) → ``creating`` (rows go in by chunks, each a short write unit; the
batch's candidates are hidden from lists, counts, the planner and the dispatcher) →
``done`` (one short unit flips the status and adds the counts, so everything appears at
once) → ``undone``. A small batch is created inside the confirm request; a large one by
the scheduler's tick (``work_queued``). One worker holds a creating batch at a time
(``worker``/``worker_until``); each chunk moves ``rows_done`` in the same transaction as its
rows, so a batch whose process died is resumed by the next tick after the last chunk that
landed, never creating a row twice. Candidates are validated with the same rules as one added by hand
(``candidates.services.clean_contact``: e-mail, phone, time zone from the phone), the same
duplicate rule (same e-mail, or lacking one the same phone, in this interview), the same
deadline rule (counted again from the moment the invite goes) and the same invite timing
(``followups.rules.next_allowed``: the send window and the days for first invites).
"""
from __future__ import annotations

import csv
import io
import json
import logging
import re
import secrets
import shutil
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass, field, fields
from functools import lru_cache
from itertools import islice
from datetime import datetime, timedelta
from pathlib import Path
from typing import Iterator

import phonenumbers
from flask import current_app
from sqlalchemy import delete, exists, func, insert, or_, select, update
from sqlalchemy.orm import Session

from ..candidates.services import (CHANNEL_LABELS, ContactData, ContactErrors, clean_contact, csv_safe,
                                   deadline_from_date, default_deadline_date, erase_candidate)
from ..errors import DomainError
from ..followups.rules import next_allowed, rules_for
from ..forms_common import timezone_names
from ..models import (CHANNELS, Agent, Candidate, CandidateCount, Event, ImportBatch, ImportRow, Message,
                      MessageStatus, Stage, new_token)
from ..settings.services import get_settings
from ..transactions import end_transaction, read_only, write_unit
from . import parsers
from .parsers import Problem, Resume, Table, UploadRefused

log = logging.getLogger(__name__)

# Rows per write unit at first; each next unit is sized from how long the last one took, to
# hold the write lock about CHUNK_TARGET (a candidate's insert touches a dozen indexes, the
# search index, its event, invite and report row: well under a millisecond, but it adds up).
CHUNK = 200
CHUNK_TARGET = 0.04  # seconds
CHUNK_RANGE = (50, 2000)
# How long a worker holds a creating batch; renewed by each chunk (a chunk takes
# milliseconds), so a batch whose hold ran out has lost its worker and the next tick resumes it.
WORKER_HOLD = timedelta(minutes=2)
# Batches of at most this many rows are created inside the confirm request; larger ones by
# the scheduler's tick (or ``flask milo dispatch``), the batch page showing the progress.
INLINE_ROWS = 1000
# Seconds of creating per tick, so sending is not held up for long by a 50,000-row upload.
TICK_BUDGET = 20.0
# Files of a batch never confirmed are removed after this long.
KEEP_FILES = timedelta(days=1)
SHOWN_ROWS = 200

FIELDS = (
    ("", "— not used —"), ("name", "Full name"), ("first_name", "First name"), ("last_name", "Last name"),
    ("email", "E-mail"), ("phone", "Phone"), ("timezone", "Time zone"), ("country", "Country"),
    ("source_detail", "Source detail / job board"), ("external_id", "External id"),
)
FIELD_NAMES = tuple(name for name, _ in FIELDS if name)
OUTCOMES = ("new", "duplicate", "invalid")


def _plain(text: str) -> str:
    text = unicodedata.normalize("NFKD", text.lower())
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text).split())


# Header words people use, in English, French, German, Spanish, Dutch and Portuguese.
SYNONYMS = {
    "name": ["name", "full name", "fullname", "candidate", "candidate name", "applicant", "applicant name",
             "contact name", "nom", "nom complet", "nom et prenom", "vollstandiger name", "kandidat",
             "bewerber", "nombre", "nombre completo", "candidato", "naam", "volledige naam", "kandidaat",
             "nome", "nome completo"],
    "first_name": ["first name", "firstname", "first", "given name", "forename", "prenom", "vorname",
                   "nombre de pila", "primer nombre", "voornaam", "primeiro nome", "nome proprio"],
    "last_name": ["last name", "lastname", "last", "surname", "family name", "nom de famille", "nachname",
                  "familienname", "apellido", "apellidos", "achternaam", "sobrenome", "apelido", "ultimo nome"],
    "email": ["email", "e mail", "email address", "e mail address", "mail", "mail address", "courriel",
              "adresse e mail", "adresse mail", "adresse electronique", "e mail adresse", "emailadresse",
              "correo", "correo electronico", "email adres", "e mailadres", "mailadres", "endereco de email",
              "endereco de e mail", "endereco eletronico"],
    "phone": ["phone", "phone number", "telephone", "tel", "mobile", "mobile phone", "mobile number", "cell",
              "cell phone", "cellphone", "whatsapp", "sms", "numero de telephone", "portable", "telephone portable",
              "telefon", "telefonnummer", "handy", "handynummer", "mobil", "mobilnummer", "mobiltelefon",
              "telefono", "movil", "celular", "numero de telefono", "telefoon", "telefoonnummer", "mobiel",
              "mobiel nummer", "gsm", "telemovel", "numero de telemovel", "numero de celular"],
    "timezone": ["time zone", "timezone", "tz", "fuseau horaire", "zeitzone", "zona horaria", "tijdzone",
                 "fuso horario"],
    "country": ["country", "country code", "pays", "land", "pais", "staat"],
    "source_detail": ["source", "source detail", "job board", "jobboard", "board", "origin", "site", "channel",
                      "plateforme", "provenance", "quelle", "jobborse", "herkunft", "fuente", "portal",
                      "origen", "bron", "vacaturesite", "fonte", "origem"],
    "external_id": ["id", "external id", "candidate id", "applicant id", "reference", "ref", "identifiant",
                    "kennung", "bewerber id", "bewerbernummer", "identificador", "referencia", "referentie",
                    "kenmerk"],
}
_SYNONYM_INDEX = {_plain(word): name for name, words in SYNONYMS.items() for word in words}


def guess_mapping(headers: list[str]) -> list[str]:
    """The field each column holds, guessed from its header ("" for a column not used)."""
    mapping: list[str] = []
    for header in headers:
        guess = _SYNONYM_INDEX.get(_plain(header), "")
        mapping.append("" if guess in mapping else guess)
    # "Nom" beside "Prénom" (or "Nombre" beside "Apellidos") is the other half of the name.
    if "name" in mapping and "first_name" in mapping and "last_name" not in mapping:
        mapping[mapping.index("name")] = "last_name"
    elif "name" in mapping and "last_name" in mapping and "first_name" not in mapping:
        mapping[mapping.index("name")] = "first_name"
    return mapping


# --- the temporary folder -----------------------------------------------------------------

def batch_folder(root: Path, batch: ImportBatch) -> Path | None:
    """Where a batch's files wait for the review; None once they are gone."""
    if not batch.folder:
        return None
    path = root / batch.folder
    return path if path.is_dir() else None


def _remove_folder(root: Path, name: str | None) -> None:
    if name and re.fullmatch(r"[A-Za-z0-9_-]+", name):
        shutil.rmtree(root / name, ignore_errors=True)


def _save_items(folder: Path, items: list) -> None:
    # The fields are plain values and lists: a shallow dict serialises the same as asdict(),
    # without asdict's deep copy of every row (a third of a 10,000-row review's time).
    plain = [{f.name: getattr(item, f.name) for f in fields(item)} for item in items]
    (folder / "read.json").write_text(json.dumps(plain), encoding="utf-8")


def load_items(root: Path, batch: ImportBatch) -> list[Table | Resume | Problem]:
    """What was read from the batch's files (kept beside them); DomainError when they are gone."""
    folder = batch_folder(root, batch)
    if folder is None:
        raise DomainError("The files of this upload are no longer kept (a day passed, or it was confirmed "
                          "or cancelled): upload them again.")
    kinds = {"table": Table, "resume": Resume, "problem": Problem}
    items = []
    for raw in json.loads((folder / "read.json").read_text(encoding="utf-8")):
        if raw["kind"] == "table":
            raw["rows"] = [tuple(r) for r in raw["rows"]]
        items.append(kinds[raw["kind"]](**raw))
    return items


def start_upload(session: Session, root: Path, agent: Agent, files: list[tuple[str, bytes]], now: datetime,
                 actor_id: int | None, channel: str | None = None, invite: bool = True) -> ImportBatch:
    """Keep the files in a new temporary folder, read them, and record a batch in review.

    Raises UploadRefused (nothing kept) when the upload breaks a limit.
    """
    files = [(parsers.display_name(name), data) for name, data in files if name or data]
    if not files:
        raise UploadRefused("Choose at least one file (CSV, Excel, PDF, Word, text or zip).")
    if len(files) > parsers.MAX_FILES:
        raise UploadRefused(f"Upload at most {parsers.MAX_FILES} files at once (zip them to send more).")
    settings = get_settings(session)
    end_transaction(session)  # reading files takes a moment: no transaction open meanwhile
    items: list = []
    for name, data in files:
        items.extend(parsers.read_file(name, data, settings.default_country))
    rows = sum(len(i.rows) if isinstance(i, Table) else 1 for i in items)
    if rows > parsers.MAX_ROWS:
        raise UploadRefused(f"This upload has {rows:,} rows; at most {parsers.MAX_ROWS:,} go in one batch. "
                            f"Split it into several uploads.")
    folder = secrets.token_hex(16)
    path = root / folder
    (path / "files").mkdir(parents=True)
    try:
        for number, (name, data) in enumerate(files, start=1):
            # Stored under a name of our own: the recruiter's file name is only ever shown.
            (path / "files" / f"{number:03d}{parsers.extension(name)[:6]}").write_bytes(data)
        _save_items(path, items)
        mapping = {str(i): {"columns": guess_mapping(item.headers), "sheet": item.sheet}
                   for i, item in enumerate(items) if isinstance(item, Table)}
        with write_unit(session) as work:
            batch = ImportBatch(agent_id=agent.id, created_by_id=actor_id, status=ImportBatch.REVIEW,
                                filenames="\n".join(name for name, _ in files), total_rows=rows, folder=folder,
                                channel=channel if channel in CHANNELS else agent.default_channel,
                                invite=invite, mapping=json.dumps(mapping),
                                created_at=now)
            work.add(batch)
    except BaseException:
        _remove_folder(root, folder)
        raise
    return batch


def choose_sheet(session: Session, root: Path, batch: ImportBatch, table_key: str, sheet: str) -> None:
    """Read another sheet of an uploaded workbook in place of the one shown."""
    items = load_items(root, batch)
    index = int(table_key) if table_key.isdigit() else -1
    if not (0 <= index < len(items)) or not isinstance(items[index], Table) or sheet not in items[index].sheets:
        raise DomainError("Choose a sheet from the list.")
    table = items[index]
    source = _source_file(root, batch, table.file)
    if source is None:
        raise DomainError("This workbook is no longer kept: upload it again.")
    items[index] = parsers.read_xlsx(table.file, source.read_bytes(), sheet)
    if isinstance(items[index], Problem):
        items[index] = Table(table.file, [], [], sheet=sheet, sheets=table.sheets)
    _save_items(batch_folder(root, batch), items)


def correct_resume(root: Path, batch: ImportBatch, key: str, name: str, email: str, phone: str) -> None:
    """Put the recruiter's name, e-mail and phone in place of what was read from a resume.

    Kept beside the files (like a chosen sheet), so the review and the confirm use them;
    the database is not written.
    """
    items = load_items(root, batch)
    index = int(key) if key.isdigit() else -1
    if not (0 <= index < len(items)) or not isinstance(items[index], Resume):
        raise DomainError("Choose a resume of this upload to correct.")
    resume = items[index]
    resume.name, resume.email, resume.phone = (" ".join(v.split())[:parsers.MAX_CELL] for v in (name, email, phone))
    resume.where = "corrected in the review"
    _save_items(batch_folder(root, batch), items)


def _source_file(root: Path, batch: ImportBatch, name: str) -> Path | None:
    names = batch.filenames.split("\n")
    if name not in names:
        return None
    return root / batch.folder / "files" / f"{names.index(name) + 1:03d}{parsers.extension(name)[:6]}"


# --- the review ---------------------------------------------------------------------------

@dataclass(slots=True)  # a 50,000-row upload holds 50,000 of these
class RowResult:
    """One row of the upload as the review sees it."""

    file: str
    row: int
    outcome: str
    reason: str = ""
    name: str = ""
    email: str = ""
    phone: str = ""
    source_detail: str = ""
    external_id: str = ""
    where: str = ""
    key: str = ""  # a resume's item in the upload, for correcting what was read from it
    contact: object = None  # CleanContact for a new row


@dataclass
class TableView:
    """A table of the upload with its headers and chosen mapping, for the mapping selects."""

    key: str
    file: str
    headers: list[str]
    columns: list[str]
    sheet: str | None
    sheets: list[str]
    samples: list[str]


@dataclass
class Review:
    """Every row's outcome, the counts, and the tables with their mappings."""

    rows: list[RowResult]
    tables: list[TableView]
    counts: Counter = field(default_factory=Counter)

    @property
    def new(self) -> int:
        """How many rows would become candidates."""
        return self.counts["new"]


def parse_mapping(raw: str | dict) -> dict:
    """A mapping from the batch or a form: {table key: {"columns": [...], "sheet": ...}}, cleaned."""
    data = json.loads(raw) if isinstance(raw, str) else raw
    clean = {}
    for key, value in (data or {}).items():
        columns = [c if c in FIELD_NAMES else "" for c in (value.get("columns") or [])]
        clean[str(key)] = {"columns": columns, "sheet": value.get("sheet")}
    return clean


def _country(cell: str, default: str) -> str:
    code = cell.strip().upper()
    return code if code in phonenumbers.SUPPORTED_REGIONS else default


def _reason(err: ContactErrors, row: RowResult, country: str, channel: str) -> str:
    errors = err.errors
    if "email" in errors and not row.email and not row.phone:
        return "no way to contact: no e-mail and no phone"
    parts = []
    if "email" in errors:
        parts.append(f"bad e-mail “{row.email}”" if row.email else
                     f"no e-mail, and the channel is {CHANNEL_LABELS[channel]}")
    if "phone" in errors:
        parts.append(f"bad phone “{row.phone}” for {country}" if row.phone else
                     f"no phone, and the channel is {CHANNEL_LABELS[channel]}")
    if "timezone" in errors:
        parts.append("unknown time zone")
    if "name" in errors:
        parts.append("name over 200 characters")
    return "; ".join(parts) or next(iter(errors.values()))


# Rows whose check is remembered. An entry (its values and the clean contact) takes about
# 800 bytes and the cache lives as long as the process: 20,000 rows hold some 16 MB, where
# the 120,000 it was once sized for held about 100 MB for good after a few large uploads.
CHECKED_CACHE = 20_000


@lru_cache(maxsize=CHECKED_CACHE)
def _checked(name: str, email: str, phone: str, tz: str, channel: str, country: str, zone: str):
    """clean_contact's answer for these values (a CleanContact or the ContactErrors), remembered.

    The review runs again on every change of a mapping and the create checks the rows again:
    the same values need not be validated twice (e-mail and phone checks are most of a
    review's time). An upload larger than the cache is checked afresh each time.
    """
    try:
        return clean_contact(ContactData(name=name, email=email, phone=phone, timezone=tz, channel=channel),
                             country, zone, require_name=False)
    except ContactErrors as err:
        return err


def _existing(session: Session, agent_id: int, emails: list[str], phones: list[str],
              own_batch: int | None = None) -> tuple[set, set]:
    """E-mails and phones (of these) already in this interview, read in slices of 500.

    ``own_batch``: leave out the candidates of this batch (a resumed create reviews its rows again).
    """
    found_emails, found_phones = set(), set()
    base = [Candidate.agent_id == agent_id, Candidate.erased_at.is_(None)]
    if own_batch is not None:
        base.append(or_(Candidate.import_batch_id.is_(None), Candidate.import_batch_id != own_batch))
    for i in range(0, len(emails), 500):
        found_emails.update(session.scalars(select(Candidate.email).where(
            *base, Candidate.email.in_(emails[i:i + 500]))))
    for i in range(0, len(phones), 500):
        found_phones.update(session.scalars(select(Candidate.phone).where(
            *base, Candidate.phone.in_(phones[i:i + 500]))))
    return found_emails, found_phones


def review(session: Session, batch: ImportBatch, items: list, mapping: dict, channel: str,
           own_batch: int | None = None) -> Review:
    """Every row as new, duplicate (of a candidate, or of an earlier row) or invalid with the reason."""
    settings = get_settings(session)
    tables: list[TableView] = []
    results = list(_checked_rows(items, mapping, channel, settings.default_country, settings.default_timezone,
                                 tables))
    _mark_duplicates(session, batch.agent_id, results, own_batch)
    counts = Counter(r.outcome for r in results)
    return Review(results, tables, counts)


def _row_count(items: list) -> int:
    """How many rows the review and the create see in these items (a resume or problem is one)."""
    return sum(len(item.rows) if isinstance(item, Table) else 1 for item in items)


def _checked_rows(items: list, mapping: dict, channel: str, country: str, zone: str,
                  tables: list | None = None, start: int = 0) -> Iterator[RowResult]:
    """Each row, in order, as new or invalid with the reason (duplicates are found by the caller).

    A generator, so the create holds one chunk of rows at a time; ``start`` skips that many
    rows without checking them (a resumed create). ``tables`` (when given) gets each table's view.
    """
    zones = timezone_names()
    position = 0
    for index, item in enumerate(items):
        key = str(index)
        if isinstance(item, Problem):
            position += 1
            if position > start:
                yield RowResult(item.file, 0, "invalid", f"unreadable file: {item.reason}")
            continue
        if isinstance(item, Resume):
            position += 1
            if position <= start:
                continue
            row = RowResult(item.file, 0, "new", name=item.name, email=item.email, phone=item.phone,
                            where=item.where, key=key)
            if item.error:
                row.outcome, row.reason = "invalid", item.error
            else:
                _check(row, country, "", channel, zone)
            yield row
            continue
        chosen = mapping.get(key, {})
        columns = list(chosen.get("columns") or guess_mapping(item.headers))
        columns = (columns + [""] * len(item.headers))[:len(item.headers)]
        if tables is not None:
            tables.append(TableView(key, item.file, item.headers, columns, item.sheet, item.sheets,
                                    [", ".join(c for c in cells[:4] if c) for _, cells in item.rows[:1]]))
        where = {name: columns.index(name) for name in FIELD_NAMES if name in columns}
        skip = min(max(start - position, 0), len(item.rows))
        position += len(item.rows)
        for number, cells in item.rows[skip:] if skip else item.rows:
            def get(name, cells=cells):
                i = where.get(name)
                return cells[i] if i is not None and i < len(cells) else ""
            name = get("name") or " ".join(p for p in (get("first_name"), get("last_name")) if p)
            tz = get("timezone")
            row = RowResult(item.file, number, "new", name=name, email=get("email"), phone=get("phone"),
                            source_detail=get("source_detail")[:100], external_id=get("external_id")[:100])
            if tz and tz not in zones:
                row.outcome, row.reason = "invalid", f"unknown time zone “{tz}”"
            else:
                _check(row, _country(get("country"), country), tz, channel, zone)
            yield row


def _check(row: RowResult, country: str, tz: str, channel: str, zone: str) -> None:
    """Validate a new row as adding by hand does: its clean contact, or invalid with the reason."""
    checked = _checked(row.name, row.email, row.phone, tz, channel, country, zone)
    if isinstance(checked, ContactErrors):
        row.outcome, row.reason = "invalid", _reason(checked, row, country, channel)
    else:
        row.contact = checked


def _mark_duplicates(session: Session, agent_id: int, results: list[RowResult], own_batch: int | None = None) -> None:
    """The duplicate rule of adding by hand: the same e-mail, or (lacking one) the same phone."""
    fresh = [r for r in results if r.outcome == "new"]
    emails = sorted({r.contact.email for r in fresh if r.contact.email})
    phones = sorted({r.contact.phone for r in fresh if not r.contact.email})
    taken_emails, taken_phones = _existing(session, agent_id, emails, phones, own_batch)
    _sort_out(fresh, taken_emails, taken_phones, {}, {})


def _sort_out(fresh: list[RowResult], taken_emails: set, taken_phones: set, seen_emails: dict,
              seen_phones: dict) -> None:
    """Mark the new rows that repeat a candidate (``taken_*``) or an earlier row (``seen_*``).

    ``seen_*`` map an e-mail or phone to the label of the row that brought it; the rows left
    new are added to them, so the create carries them from one chunk to the next.
    """
    for r in fresh:
        email, phone = r.contact.email, r.contact.phone
        if email and email in taken_emails:
            r.outcome, r.reason = "duplicate", "already a candidate of this interview (same e-mail)"
        elif not email and phone in taken_phones:
            r.outcome, r.reason = "duplicate", "already a candidate of this interview (same phone)"
        elif email and email in seen_emails:
            r.outcome, r.reason = "duplicate", f"same e-mail as {seen_emails[email]}"
        elif not email and phone in seen_phones:
            r.outcome, r.reason = "duplicate", f"same phone as {seen_phones[phone]}"
        else:
            if email:
                seen_emails[email] = _label(r)
            if phone:
                seen_phones.setdefault(phone, _label(r))
            continue
        r.contact = None


def _label(row: RowResult) -> str:
    return f"row {row.row} of {row.file}" if row.row else row.file


# --- creating -----------------------------------------------------------------------------

@dataclass
class Created:
    """What confirming did: the batch, and whether this call created it (False: it was already)."""

    batch: ImportBatch
    created_now: bool


def move(session: Session, batch_id: int, source: str, target: str, **values) -> bool:
    """Move a batch from ``source`` to ``target`` with one conditional UPDATE; whether it moved."""
    if target not in ImportBatch.MOVES[source]:
        raise ValueError(f"an import batch cannot go from {source} to {target}")
    result = session.execute(update(ImportBatch).where(ImportBatch.id == batch_id, ImportBatch.status == source)
                             .values(status=target, **values).execution_options(synchronize_session=False))
    return result.rowcount == 1


class _LostBatch(Exception):
    """The batch was taken from this worker (Undo, or its hold ran out): stop without writing."""


def confirm(session: Session, root: Path, batch: ImportBatch, mapping: dict, channel: str, invite: bool,
            now: datetime, actor_id: int | None, chunk: int = CHUNK, adapt: bool = True,
            inline: int = INLINE_ROWS) -> Created:
    """Claim the batch for creating (review → creating); create it now if small, else queue it.

    The claim is one conditional UPDATE, so a second click or a reload finds it taken and
    creates nothing. A batch of at most ``inline`` rows is created in this call (a 20-row
    upload is instant); a larger one is left for the scheduler's tick (``work_queued``) and
    its page shows the progress. Either way rows go in by chunks, hidden until the last one.
    """
    if channel not in CHANNELS:
        raise DomainError("Choose a channel from the list.")
    now_inline = batch.total_rows <= inline
    holder = f"confirm-{secrets.token_hex(6)}"
    with write_unit(session) as work:
        claimed = move(work, batch.id, ImportBatch.REVIEW, ImportBatch.CREATING, heartbeat_at=now,
                       mapping=json.dumps(mapping), channel=channel, invite=invite, created_by_id=actor_id,
                       rows_done=0, worker=holder if now_inline else None,
                       worker_until=now + WORKER_HOLD if now_inline else None)
    if not claimed:
        session.refresh(batch)
        return Created(batch, False)
    if now_inline:
        _work(session, root, batch.id, holder, now, None, chunk, adapt)
    session.refresh(batch)
    return Created(batch, True)


def take_batch(session: Session, batch_id: int, holder: str, now: datetime) -> bool:
    """Take a creating batch whose hold has passed (one conditional UPDATE); whether it was taken."""
    with write_unit(session) as work:
        return work.execute(update(ImportBatch).where(
            ImportBatch.id == batch_id, ImportBatch.status == ImportBatch.CREATING,
            or_(ImportBatch.worker_until.is_(None), ImportBatch.worker_until <= now))
            .values(worker=holder, worker_until=now + WORKER_HOLD)
            .execution_options(synchronize_session=False)).rowcount == 1


def work_queued(session: Session, root: Path, now: datetime, holder: str, budget: float | None = TICK_BUDGET,
                chunk: int = CHUNK, adapt: bool = True) -> int:
    """Create (or resume, or finish undoing) the batches left creating; how many it worked on.

    Run by every scheduler tick and by ``flask milo dispatch``. Each batch is taken by one
    conditional UPDATE, so one process works it at a time; a batch whose worker died is
    taken again once its hold runs out and resumes after the last chunk that landed.
    ``budget``: seconds of work for this call (the next tick goes on), None for no limit.
    """
    waiting = list(session.scalars(select(ImportBatch.id).where(
        ImportBatch.status == ImportBatch.CREATING,
        or_(ImportBatch.worker_until.is_(None), ImportBatch.worker_until <= now)).order_by(ImportBatch.id)))
    end_transaction(session)
    started, worked, holder = time.monotonic(), 0, holder[:64]
    for batch_id in waiting:
        left = None if budget is None else budget - (time.monotonic() - started)
        if worked and left is not None and left <= 0:
            break
        if not take_batch(session, batch_id, holder, now):
            continue
        worked += 1
        try:
            _work(session, root, batch_id, holder, now, left, chunk, adapt)
        except Exception:  # that batch went back to review with a note; the others go on
            log.exception("Creating bulk upload %s failed", batch_id)
    return worked


def _work(session: Session, root: Path, batch_id: int, holder: str, now: datetime, budget: float | None,
          chunk: int, adapt: bool) -> None:
    """Create a taken batch's rows from ``rows_done`` on, chunk by chunk, then show them all at once.

    Each chunk's write unit first moves ``rows_done`` on with a conditional UPDATE that
    also checks this worker still holds the batch and Undo was not pressed, then writes the
    candidates, events, invites and report rows of those rows: a chunk lands whole or not
    at all, and never twice. A failure (not a lost hold) removes what was created and
    puts the batch back in review; a killed process leaves it to the next tick.
    """
    started = time.monotonic()
    read_only(session)
    batch = session.get(ImportBatch, batch_id)
    session.refresh(batch)
    if batch.undone_at is not None:
        end_transaction(session)
        _stop_undone(session, root, batch_id, holder, now)
        return
    try:
        items = load_items(root, batch)
        settings = get_settings(session)
        agent = session.get(Agent, batch.agent_id)
        rules = rules_for(settings, agent)
        channel, invite, actor_id, folder = batch.channel, batch.invite, batch.created_by_id, batch.folder
        first = i = batch.rows_done
        total = _row_count(items)
        # The rows are checked as the review checks them, a chunk at a time (never all of them
        # with their candidate values at once: a 50,000-row upload would hold them all in
        # memory). Duplicates are sorted out inside each chunk's write unit: of a candidate
        # (read there, so one added since the review is caught) or of an earlier row (the
        # e-mails and phones of the rows created so far, carried from chunk to chunk).
        seen_emails, seen_phones = _landed(session, batch_id) if first else ({}, {})
        # Run the duplicate check once here, in the read: its first run (compiling and caching
        # the statements) took some 200 ms, which the first chunk held the write lock for.
        _taken(session.connection(), agent.id, batch_id, [""], [""])
        end_transaction(session)
        pending = _checked_rows(items, parse_mapping(batch.mapping), channel, settings.default_country,
                                settings.default_timezone, start=first)
        moments: dict = {}
        size = chunk
        while i < total:
            if i > first and budget is not None and time.monotonic() - started > budget:
                _let_go(session, batch_id, holder, now)  # at least one chunk per turn; the next tick goes on
                return
            rows = list(islice(pending, size))
            if not rows:  # the files hold fewer rows than counted: never loop in place
                raise DomainError("The files of this upload changed while it was being added.")
            end = i + len(rows)
            prepared = _prepare(batch, agent, rules, rows, channel, invite, now, actor_id, moments)
            began = time.monotonic()
            later = now + timedelta(seconds=began - started)
            with write_unit(session) as work:
                moved = work.execute(update(ImportBatch).where(
                    ImportBatch.id == batch_id, ImportBatch.status == ImportBatch.CREATING,
                    ImportBatch.worker == holder, ImportBatch.undone_at.is_(None), ImportBatch.rows_done == i)
                    .values(rows_done=end, heartbeat_at=later, worker_until=later + WORKER_HOLD)
                    .execution_options(synchronize_session=False)).rowcount
                if moved != 1:
                    raise _LostBatch()
                _create_chunk(work, batch, agent, rows, prepared, channel, invite, now, actor_id,
                              seen_emails, seen_phones)
            del rows, prepared  # only the e-mails and phones seen are kept from one chunk to the next
            i = end
            if adapt:
                took = max(time.monotonic() - began, 0.001)
                size = int(min(max(size * CHUNK_TARGET / took, CHUNK_RANGE[0]), CHUNK_RANGE[1], size * 2))
        with write_unit(session) as work:
            # Counted from the table: a resumed create did not see the first chunks' outcomes.
            outcomes = dict(work.execute(select(ImportRow.outcome, func.count()).where(ImportRow.batch_id == batch_id)
                                         .group_by(ImportRow.outcome)).all())
            created = work.execute(select(Candidate.stage, func.count()).where(
                Candidate.import_batch_id == batch_id, Candidate.erased_at.is_(None)).group_by(Candidate.stage)).all()
            done = work.execute(update(ImportBatch).where(
                ImportBatch.id == batch_id, ImportBatch.status == ImportBatch.CREATING,
                ImportBatch.worker == holder, ImportBatch.undone_at.is_(None))
                .values(status=ImportBatch.DONE, finished_at=now, folder=None, heartbeat_at=None, worker=None,
                        worker_until=None, total_rows=total, created_count=outcomes.get("created", 0),
                        duplicate_count=outcomes.get("duplicate", 0), error_count=outcomes.get("invalid", 0))
                .execution_options(synchronize_session=False)).rowcount
            if done != 1:
                raise _LostBatch()
            # The triggers skipped this batch's candidates while it was creating: count them now,
            # in the same transaction that shows them.
            for stage, n in created:
                work.add(CandidateCount(agent_id=agent.id, stage=stage, source="bulk", channel=channel, n=n,
                                        folded=False))
    except _LostBatch:
        session.rollback()
        return
    except BaseException:
        session.rollback()
        _discard_created(session, batch_id, ImportBatch.REVIEW)
        raise
    _remove_folder(root, folder)


def import_root() -> Path:
    """The folder holding uploads under review (one sub-folder per batch): MILO_IMPORT_DIR or the instance's."""
    configured = current_app.config.get("MILO_IMPORT_DIR")
    return Path(configured) if configured else Path(current_app.instance_path) / "imports"


def tick_step(session: Session, now: datetime, holder: str, budget: float | None = TICK_BUDGET) -> int:
    """The scheduler tick's part: work the queued bulk uploads; never fails the tick."""
    try:
        return work_queued(session, import_root(), now, holder, budget)
    except Exception:
        session.rollback()
        log.exception("Working the queued bulk uploads failed; the next tick tries again")
        return 0


def _let_go(session: Session, batch_id: int, holder: str, now: datetime) -> None:
    """Free a batch this worker holds, for the next tick to go on with."""
    with write_unit(session) as work:
        work.execute(update(ImportBatch).where(ImportBatch.id == batch_id, ImportBatch.worker == holder)
                     .values(worker=None, worker_until=None).execution_options(synchronize_session=False))


def _prepare(batch: ImportBatch, agent: Agent, rules, rows: list[RowResult], channel: str, invite: bool,
             now: datetime, actor_id: int | None, moments: dict) -> list[dict | None]:
    """Each new row's candidate values and invite moment, worked out before any lock is taken.

    ``moments``: the deadline and first invite moment per time zone, kept from chunk to chunk.
    """
    by_hand = channel == "link" and invite
    prepared: list[dict | None] = []
    for r in rows:
        if r.outcome != "new":
            prepared.append(None)
            continue
        contact = r.contact
        zone = contact.timezone
        if zone not in moments:
            day = default_deadline_date(agent, zone, now)
            moments[zone] = (deadline_from_date(day, zone, now), next_allowed(now, zone, rules, initial=True) or now)
        deadline, first_invite = moments[zone]
        prepared.append(dict(
            agent_id=agent.id, name=contact.name or None, email=contact.email, phone=contact.phone, timezone=zone,
            channel=channel, source="bulk", source_detail=r.source_detail or None, token=new_token(),
            stage=Stage.INVITED if by_hand else Stage.ADDED, invited_at=now if by_hand else None,
            deadline_at=deadline,
            # As when adding by hand: the default deadline counts again from when the invite goes
            # (a link "sent by hand" goes now, so its clock has started).
            deadline_follows_invite=not by_hand, created_by_id=actor_id, created_at=now, updated_at=now,
            last_activity_at=now if by_hand else None, import_batch_id=batch.id, _invite_at=first_invite))
    return prepared


def _landed(session: Session, batch_id: int) -> tuple[dict, dict]:
    """The e-mails and phones of a resumed batch's candidates already created, with their rows' labels."""
    seen_emails: dict[str, str] = {}
    seen_phones: dict[str, str] = {}
    query = (select(Candidate.email, Candidate.phone, ImportRow.row_number, ImportRow.filename)
             .join(ImportRow, ImportRow.candidate_id == Candidate.id)
             .where(ImportRow.batch_id == batch_id).order_by(ImportRow.id))
    for email, phone, number, filename in session.execute(query):
        label = f"row {number} of {filename}" if number else filename
        if email:
            seen_emails.setdefault(email, label)
        if phone:
            seen_phones.setdefault(phone, label)
    return seen_emails, seen_phones


def _taken(conn, agent_id: int, batch_id: int, emails: list[str], phones: list[str]) -> tuple[set, set]:
    """Of these e-mails and phones, those of a candidate of this interview (not of this batch).

    One query for the e-mails and one for the phones (each uses its index; an OR of the two
    would read every candidate of the interview, for every chunk).
    """
    c = Candidate.__table__.c
    others = (c.erased_at.is_(None), or_(c.import_batch_id.is_(None), c.import_batch_id != batch_id))
    taken_emails = set(conn.scalars(select(c.email).where(
        c.agent_id == agent_id, *others, c.email.in_(emails)))) if emails else set()
    # "agent_id + 0": phones have no (agent, phone) index, and SQLite would otherwise walk all
    # of the interview's candidates by agent_id rather than look each phone up in its index.
    taken_phones = set(conn.scalars(select(c.phone).where(
        (c.agent_id + 0) == agent_id, *others, c.phone.in_(phones)))) if phones else set()
    return taken_emails, taken_phones


def _create_chunk(work: Session, batch: ImportBatch, agent: Agent, rows: list[RowResult], prepared: list,
                  channel: str, invite: bool, now: datetime, actor_id: int | None, seen_emails: dict,
                  seen_phones: dict) -> Counter:
    """One write unit: this slice's duplicates sorted out, its candidates, their events and invites, its report rows."""
    conn, candidate = work.connection(), Candidate.__table__
    fresh = [r for r in rows if r.outcome == "new"]
    # Read inside the unit: someone may have added one of these people since the review,
    # and nobody can add one between this read and the inserts below.
    taken_emails, taken_phones = _taken(conn, agent.id, batch.id, [r.contact.email for r in fresh if r.contact.email],
                                        [r.contact.phone for r in fresh if not r.contact.email])
    _sort_out(fresh, taken_emails, taken_phones, seen_emails, seen_phones)
    fresh = [(r, v) for r, v in zip(rows, prepared) if v is not None and r.outcome == "new"]
    by_hand = channel == "link" and invite
    # Core statements on the unit's connection: the ORM's bulk path costs more Python per
    # row than SQLite spends inserting it.
    values = [{k: x for k, x in v.items() if k != "_invite_at"} for _, v in fresh]
    # RETURNING rows come back in any order (asking SQLAlchemy to sort them makes it insert
    # one row per statement on SQLite): each is matched to its row by its unique token.
    by_token = dict(conn.execute(insert(candidate).returning(candidate.c.token, candidate.c.id), values).all()) \
        if values else {}
    made = {id(r): by_token[v["token"]] for r, v in fresh}
    events, messages = [], []
    for r, v in fresh:
        candidate_id = made[id(r)]
        events.append(dict(candidate_id=candidate_id, agent_id=agent.id, type="added", at=now, detail="bulk",
                           actor_id=actor_id))
        if by_hand:
            events.append(dict(candidate_id=candidate_id, agent_id=agent.id, type=Stage.INVITED, at=now,
                               channel="link", detail="link sent by hand", actor_id=actor_id))
        elif invite:
            messages.append(dict(candidate_id=candidate_id, kind="invite", step=1, channel=channel,
                                 manual=actor_id is not None, immediate=False, status=MessageStatus.SCHEDULED,
                                 rule="Invite on bulk upload", scheduled_for=v["_invite_at"], attempts=0,
                                 created_by_id=actor_id, created_at=now))
    if events:
        conn.execute(insert(Event.__table__), events)
    if messages:
        conn.execute(insert(Message.__table__), messages)
    conn.execute(insert(ImportRow.__table__), [dict(
        batch_id=batch.id, filename=r.file[:255], row_number=r.row,
        outcome="created" if id(r) in made else r.outcome, reason=(r.reason or r.where)[:500] or None,
        candidate_id=made.get(id(r)), name=(r.name or None) and r.name[:200],
        email=(r.email or None) and r.email[:254], phone=(r.phone or None) and r.phone[:40],
        external_id=r.external_id or None) for r in rows])
    return Counter({Stage.INVITED if by_hand else Stage.ADDED: len(made)})


def _discard_created(session: Session, batch_id: int, then: str | None) -> None:
    """Remove a creating batch's candidates and report rows in chunks, then reopen or delete it.

    The batch is still "creating" while its candidates go, so the count triggers skip them
    (they were never counted). ``then``: review (to try again) or None (delete the batch).
    """
    while True:
        with write_unit(session) as work:
            ids = list(work.scalars(select(Candidate.id).where(Candidate.import_batch_id == batch_id).limit(CHUNK)))
            if ids:
                work.execute(delete(Candidate).where(Candidate.id.in_(ids)))
                continue
            rows = list(work.scalars(select(ImportRow.id).where(ImportRow.batch_id == batch_id).limit(CHUNK * 4)))
            if rows:
                work.execute(delete(ImportRow).where(ImportRow.id.in_(rows)))
                continue
            if then is None:
                work.execute(delete(ImportBatch).where(ImportBatch.id == batch_id,
                                                       ImportBatch.status == ImportBatch.CREATING))
            else:
                move(work, batch_id, ImportBatch.CREATING, then, heartbeat_at=None, worker=None, worker_until=None,
                     rows_done=0, note="Creating stopped on an error; nothing was added. Try again.")
            return


def cancel(session: Session, root: Path, batch: ImportBatch) -> None:
    """Drop a batch still in review, and its files."""
    with write_unit(session) as work:
        gone = work.execute(delete(ImportBatch).where(ImportBatch.id == batch.id,
                                                      ImportBatch.status == ImportBatch.REVIEW)).rowcount
    if gone != 1:
        raise DomainError("This upload is no longer in review: nothing was cancelled.")
    _remove_folder(root, batch.folder)


def remove_abandoned(session: Session, root: Path, now: datetime) -> int:
    """Remove batches never confirmed (after a day) and their files, and folders no batch names.

    A batch left *creating* by a process that died is not removed: the next tick resumes it
    (``work_queued``). Decided in a read first, so a call with nothing to do writes nothing.
    """
    old = list(session.execute(select(ImportBatch.id, ImportBatch.folder).where(
        ImportBatch.status == ImportBatch.REVIEW, ImportBatch.created_at < now - KEEP_FILES)))
    end_transaction(session)
    for batch_id, folder in old:
        with write_unit(session) as work:
            work.execute(delete(ImportBatch).where(ImportBatch.id == batch_id, ImportBatch.status == ImportBatch.REVIEW))
        _remove_folder(root, folder)
    if root.is_dir():
        kept = set(session.scalars(select(ImportBatch.folder).where(ImportBatch.folder.is_not(None))))
        end_transaction(session)
        for path in root.iterdir():
            # A folder no batch names (a failed upload) older than a day.
            if path.name not in kept and path.stat().st_mtime < (now - KEEP_FILES).timestamp():
                _remove_folder(root, path.name)
    return len(old)


# --- undo and the report ------------------------------------------------------------------

@dataclass
class UndoResult:
    """How many candidates Undo removed and kept, with the reasons for those kept."""

    removed: int
    kept: int
    reasons: Counter

    def summary(self) -> str:
        """One sentence for the recruiter."""
        text = f"Removed {self.removed:,} candidate{'s' * (self.removed != 1)}"
        if self.kept:
            why = ", ".join(f"{reason} ({n:,})" for reason, n in self.reasons.most_common())
            text += f"; kept {self.kept:,} who were already contacted: {why}"
        return text + "."


# Messages that reached, or may have reached, the person.
CONTACTED = (MessageStatus.SENDING, MessageStatus.SENT, MessageStatus.IN_DOUBT)


def _kept_reason(stage: str, visited, sent: bool) -> str | None:
    if stage not in (Stage.ADDED, Stage.INVITED):
        return f"{stage.replace('_', ' ')}"
    if visited is not None:
        return "opened their link"
    if sent:
        return "invite already sent"
    return None


# Candidates erased per write unit by Undo (each erase is a handful of statements).
UNDO_CHUNK = 50


def undo(session: Session, batch: ImportBatch, now: datetime, actor_id: int | None,
         root: Path | None = None) -> UndoResult:
    """Remove the batch's candidates nobody has contacted yet (queued invites cancelled first).

    Removing is erasing, as a candidate's Delete does (``candidates.services.erase_candidate``):
    the row stays as a tombstone, so its id is never given to someone else. In chunks; each
    re-checks in SQL that nothing went out since it looked. Pressed while the batch is still
    being created, it stops the creating and removes what landed (nobody saw or was sent it).
    """
    holder = f"undo-{secrets.token_hex(6)}"
    with write_unit(session) as work:
        stopping = work.execute(update(ImportBatch).where(
            ImportBatch.id == batch.id, ImportBatch.status == ImportBatch.CREATING, ImportBatch.undone_at.is_(None))
            .values(undone_at=now, worker=holder, worker_until=now + WORKER_HOLD)
            .execution_options(synchronize_session=False)).rowcount == 1
    if stopping:
        result = _stop_undone(session, root, batch.id, holder, now)
        session.refresh(batch)
        return result
    with write_unit(session) as work:
        if not move(work, batch.id, ImportBatch.DONE, ImportBatch.UNDONE, undone_at=now):
            raise DomainError("This upload was already undone (or is not finished).")
    read_only(session)
    ids = list(session.scalars(select(Candidate.id).where(Candidate.import_batch_id == batch.id,
                                                          Candidate.erased_at.is_(None)).order_by(Candidate.id)))
    end_transaction(session)
    removed, reasons = 0, Counter()
    contacted = exists().where(Message.candidate_id == Candidate.id, Message.status.in_(CONTACTED))
    untouched = (Candidate.stage.in_((Stage.ADDED, Stage.INVITED)), Candidate.visited_at.is_(None), ~contacted)
    for i in range(0, len(ids), UNDO_CHUNK):
        chunk = ids[i:i + UNDO_CHUNK]
        with write_unit(session) as work:
            rows = work.execute(select(Candidate.id, Candidate.stage, Candidate.visited_at, contacted)
                                .where(Candidate.id.in_(chunk))).all()
            for _, stage, visited, sent in rows:
                reason = _kept_reason(stage, visited, sent)
                if reason:
                    reasons[reason] += 1
            gone = list(work.scalars(select(Candidate).where(Candidate.id.in_(chunk), *untouched)))
            if gone:
                work.execute(update(Message).where(Message.candidate_id.in_([c.id for c in gone]),
                                                   Message.status == MessageStatus.SCHEDULED)
                             .values(status=MessageStatus.CANCELLED, last_error="Bulk upload undone")
                             .execution_options(synchronize_session=False))
            for person in gone:
                erase_candidate(work, person, now, actor_id)
            removed += len(gone)
    result = UndoResult(removed, len(ids) - removed, reasons)
    with write_unit(session) as work:
        work.execute(update(ImportBatch).where(ImportBatch.id == batch.id).values(
            removed_count=removed, kept_count=result.kept, note=result.summary()))
    session.refresh(batch)
    return result


def _stop_undone(session: Session, root: Path | None, batch_id: int, holder: str, now: datetime) -> UndoResult:
    """Finish an Undo pressed while creating: remove what landed, then mark the batch undone.

    The batch stays *creating* (hidden, never counted) until its last candidate is gone, so
    the counts never see them; a process that dies meanwhile leaves it to the next tick.
    """
    while True:
        with write_unit(session) as work:
            ids = list(work.scalars(select(Candidate.id).where(Candidate.import_batch_id == batch_id).limit(CHUNK)))
            if ids:
                work.execute(delete(Candidate).where(Candidate.id.in_(ids)))
                continue
            removed = work.scalar(select(func.count()).select_from(ImportRow).where(
                ImportRow.batch_id == batch_id, ImportRow.outcome == "created"))
            result = UndoResult(removed, 0, Counter())
            folder = work.scalar(select(ImportBatch.folder).where(ImportBatch.id == batch_id))
            move(work, batch_id, ImportBatch.CREATING, ImportBatch.UNDONE, worker=None, worker_until=None,
                 heartbeat_at=None, folder=None, removed_count=removed, kept_count=0,
                 note=f"Stopped while adding. {result.summary()}")
            break
    if root is not None:
        _remove_folder(root, folder)
    return result


REPORT_HEADER = ["file", "row", "outcome", "reason", "name", "email", "phone", "external id", "candidate id"]


def _outcome(batch: ImportBatch, row: ImportRow, erased_at: datetime | None) -> str:
    """A report row's outcome as it is now: a created row of an undone batch says what Undo did."""
    if row.outcome != "created" or batch.undone_at is None:
        return row.outcome
    if row.candidate_id is None or (erased_at is not None and erased_at >= batch.undone_at):
        return "removed by Undo"
    return "created (erased later)" if erased_at is not None else "kept: already contacted"


def report_csv(session: Session, batch: ImportBatch) -> Iterator[str]:
    """Every row of the batch with its outcome and reason, formula cells neutralised."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(REPORT_HEADER)
    query = (select(ImportRow, Candidate.erased_at).outerjoin(Candidate, Candidate.id == ImportRow.candidate_id)
             .where(ImportRow.batch_id == batch.id).order_by(ImportRow.id))
    for r, erased_at in session.execute(query.execution_options(yield_per=1000)):
        writer.writerow([csv_safe(v) for v in (r.filename, r.row_number or "", _outcome(batch, r, erased_at), r.reason,
                                               r.name, r.email, r.phone, r.external_id, r.candidate_id)])
        if buf.tell() > 64 * 1024:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()


def batches(session: Session, limit: int = 100) -> list[ImportBatch]:
    """The latest uploads, newest first."""
    return list(session.scalars(select(ImportBatch).order_by(ImportBatch.id.desc()).limit(limit)))

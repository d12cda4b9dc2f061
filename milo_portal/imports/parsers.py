"""Reading uploaded files: CSV, Excel, resumes (PDF, DOCX, TXT) and zips of them.

Every reader takes bytes it does not trust. It never raises for bad input: a file it cannot
read becomes a ``Problem`` with a reason the recruiter can act on, and the rest of the
upload goes on. Zips (and XLSX/DOCX, which are zips) are measured from their directory
before anything is inflated, so a zip bomb is refused unopened; XML inside them is parsed
by openpyxl with defusedxml installed, and by python-docx with entities off.
"""
from __future__ import annotations

import codecs
import csv
import io
import re
import unicodedata
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import charset_normalizer
import phonenumbers

# Limits of one upload (a batch). The README's "Bulk upload" section lists them.
MAX_FILES = 20
MAX_ROWS = 100_000
MAX_ZIP_MEMBERS = 1_000
MAX_UNCOMPRESSED = 200 * 1024 * 1024  # per zip, XLSX or DOCX, from the zip's own directory
MAX_RATIO = 200  # a member inflating more than this many times its packed size is a bomb
MAX_PDF_PAGES = 30
MAX_CELL = 1_000  # characters kept of a cell; a name or an address is never longer

TABLE_TYPES = (".csv", ".tsv", ".xlsx")
RESUME_TYPES = (".pdf", ".docx", ".txt")
ACCEPTED = TABLE_TYPES + RESUME_TYPES + (".zip",)

MAGIC = (
    (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"), (b"PK\x03\x04", "a zip archive (an Excel or Word file?)"),
    (b"\xd0\xcf\x11\xe0", "an old Office document (.xls or .doc)"),
)


@dataclass
class Table:
    """Rows of a CSV file or an Excel sheet, under their header row."""

    file: str
    headers: list[str]
    rows: list[tuple[int, list[str]]]  # (row number in the file, cells)
    sheet: str | None = None
    sheets: list[str] = field(default_factory=list)
    kind: str = "table"


@dataclass
class Resume:
    """What was read from one resume: one candidate, and where each value came from."""

    file: str
    name: str = ""
    email: str = ""
    phone: str = ""
    where: str = ""
    error: str | None = None
    kind: str = "resume"


@dataclass
class Problem:
    """A file that could not be read, and why."""

    file: str
    reason: str
    kind: str = "problem"


class UploadRefused(Exception):
    """The whole upload is refused (too many files or rows): nothing is kept."""


def display_name(name: str) -> str:
    """A file name safe to show and store: no folders, no control characters, bounded."""
    base = PurePosixPath((name or "").replace("\\", "/")).name
    base = "".join(ch for ch in base if unicodedata.category(ch)[0] != "C").strip()
    return (base or "unnamed")[:120]


def extension(name: str) -> str:
    """The lower-cased extension of a file name, with its dot."""
    return PurePosixPath(name.lower()).suffix


def _looks_like(data: bytes) -> str | None:
    for magic, what in MAGIC:
        if data.startswith(magic):
            return what
    if b"\x00" in data[:4096] and not data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "a binary file"
    return None


def decode_text(data: bytes) -> str:
    """Text from bytes of unknown encoding: UTF-8 (with or without BOM), UTF-16 with a BOM,
    Windows-1252, else what charset-normalizer finds; never fails (bad bytes become U+FFFD)."""
    if data.startswith(codecs.BOM_UTF8):
        return data[3:].decode("utf-8", errors="replace")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    # Spreadsheets saved by Excel on Western Windows are Windows-1252 (a superset of
    # Latin-1's printable range): try it strictly before asking a detector to guess.
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        pass
    best = charset_normalizer.from_bytes(data[:200_000]).best()
    return data.decode(best.encoding if best else "latin-1", errors="replace")


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a phone number typed into Excel comes back as 4.47911123456e11
    if hasattr(value, "isoformat"):
        value = value.isoformat()
    return " ".join(str(value).split())[:MAX_CELL]


def _delimiter(text: str) -> str:
    header = text[:65536].split("\n", 1)[0]
    counts = {d: header.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def read_csv(name: str, data: bytes) -> Table | Problem:
    """A CSV (comma, semicolon or tab) as a table; a Problem when it is not one."""
    if not data.strip():
        return Problem(name, f"{name} is empty.")
    what = _looks_like(data)
    if what:
        return Problem(name, f"{name} is not a CSV file: it looks like {what}.")
    text = decode_text(data).replace("\x00", "")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text))
    headers: list[str] | None = None
    rows: list[tuple[int, list[str]]] = []
    try:
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue
            if headers is None:
                headers = [_cell(c) for c in cells]
                continue
            rows.append((reader.line_num, [_cell(c) for c in cells]))
            if len(rows) > MAX_ROWS:
                raise UploadRefused(f"{name} has more than {MAX_ROWS:,} rows: split it into smaller files.")
    except csv.Error:
        limit = csv.field_size_limit() // 1024
        return Problem(name, f"{name} could not be read as CSV near line {reader.line_num}: a field is "
                             f"longer than {limit} KB or a quote is never closed. Is it really a CSV export?")
    if headers is None:
        return Problem(name, f"{name} is empty.")
    if not rows:
        return Problem(name, f"{name} has a header row but no candidates under it.")
    return Table(name, headers, rows)


def check_zip(name: str, archive: zipfile.ZipFile) -> str | None:
    """Why this zip must not be opened (too many members, too big inflated), or None.

    Decided from the central directory alone, before anything is inflated. Python's
    zipfile never inflates a member past the size the directory declares, so a directory
    that lies cannot make a reader inflate more than was measured here.
    """
    members = archive.infolist()
    if len(members) > MAX_ZIP_MEMBERS:
        return f"{name} holds more than {MAX_ZIP_MEMBERS:,} files."
    total = 0
    for info in members:
        total += info.file_size
        if info.file_size > 1024 * 1024 and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            return f"{name} was refused: it would inflate to far more than its size (a zip bomb?)."
    if total > MAX_UNCOMPRESSED:
        return f"{name} was refused: it would inflate to {total // (1024 * 1024):,} MB, over the " \
               f"{MAX_UNCOMPRESSED // (1024 * 1024)} MB allowed."
    return None


def _open_zip(name: str, data: bytes) -> zipfile.ZipFile | Problem:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError):
        return Problem(name, f"{name} is damaged or is not what its name says.")
    reason = check_zip(name, archive)
    return Problem(name, reason) if reason else archive


def read_xlsx(name: str, data: bytes, sheet: str | None = None) -> Table | Problem:
    """The first sheet (or the one named) of an Excel workbook as a table."""
    archive = _open_zip(name, data)
    if isinstance(archive, Problem):
        return archive
    archive.close()
    import openpyxl

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # openpyxl warns about styles and extensions it skips
            book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception:  # openpyxl raises many kinds for a damaged file; each means "cannot read"
        return Problem(name, f"{name} could not be read as an Excel workbook (.xlsx).")
    try:
        sheets = list(book.sheetnames)
        chosen = sheet if sheet in sheets else sheets[0]
        headers: list[str] | None = None
        rows: list[tuple[int, list[str]]] = []
        for number, values in enumerate(book[chosen].iter_rows(values_only=True), start=1):
            cells = [_cell(v) for v in values]
            if not any(cells):
                continue
            if headers is None:
                headers = cells
                continue
            rows.append((number, cells))
            if len(rows) > MAX_ROWS:
                raise UploadRefused(f"{name} has more than {MAX_ROWS:,} rows: split it into smaller files.")
    except UploadRefused:
        raise
    except Exception:
        return Problem(name, f"{name} could not be read as an Excel workbook (.xlsx).")
    finally:
        book.close()
    if headers is None:
        return Problem(name, f"The sheet “{chosen}” of {name} is empty.")
    if not rows:
        return Problem(name, f"The sheet “{chosen}” of {name} has a header row but no candidates under it.")
    return Table(name, headers, rows, sheet=chosen, sheets=sheets)


# --- resumes ------------------------------------------------------------------------------

EMAIL_RE = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                      r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+")
NAME_WORD = re.compile(r"^[^\W\d_][^\W\d_.'’-]*(?:[.'’-][^\W\d_]*)*\.?$")
NOT_NAMES = {"curriculum", "vitae", "resume", "résumé", "cv", "lebenslauf", "profile", "profil", "contact"}


# Words of headings and job titles: a line made of them is not a person's name.
NOT_NAME_WORDS = NOT_NAMES | {
    "about", "address", "analyst", "assistant", "consultant", "designer", "developer", "director", "education",
    "engineer", "experience", "junior", "lead", "manager", "objective", "personal", "phone", "professional",
    "senior", "skills", "specialist", "summary", "technician", "details", "information", "references", "email",
    "e-mail", "mobile", "telephone", "page", "of", "the", "and", "for", "in", "at", "developer", "nurse", "teacher",
    "lebenslauf", "bewerbung", "currículo", "curriculo", "hoja", "vida", "sales", "marketing", "data", "software"}
# "Name:", "Resume of", "CV -" before a name; the separators that put a name beside other things.
NAME_LABEL = re.compile(r"^(?:(?:full\s+)?name|nom|nombre|naam|nome|resume|résumé|cv|curriculum\s+vitae)"
                        r"(?:\s+of)?\s*[:\-–—]?\s+", re.IGNORECASE)
NAME_SEPARATORS = re.compile(r"\s*(?:[|•·,;\t]|\s[-–—]\s)\s*")


def _name_in(text: str, default_country: str) -> str:
    """A person's name on this line (before any e-mail, phone or title beside it), or ""."""
    text = EMAIL_RE.sub(" | ", text)
    for match in phonenumbers.PhoneNumberMatcher(text, (default_country or "US").upper()):
        text = text.replace(match.raw_string, " | ")
    for part in NAME_SEPARATORS.split(text.strip()):
        part = NAME_LABEL.sub("", part.strip())
        words = part.split()
        if not (2 <= len(words) <= 5 and len(part) <= 60 and all(NAME_WORD.match(w) for w in words)):
            continue
        if NOT_NAME_WORDS & {w.lower().strip(".") for w in words}:
            continue
        if all(w.isupper() for w in words):  # ANA SOUZA → Ana Souza
            words = [w.capitalize() for w in words]
        elif not any(w[0].isupper() for w in words):  # a line of prose, not a name
            continue
        return " ".join(words)
    return ""


def _lines(pages: list[str]) -> list[tuple[int, int, str]]:
    out = []
    for page_number, page in enumerate(pages, start=1):
        for line_number, line in enumerate((l.strip() for l in page.splitlines() if l.strip()), start=1):
            out.append((page_number, line_number, line[:MAX_CELL]))
    return out


def _where(page: int, line: int, paged: bool) -> str:
    return f"page {page}, line {line}" if paged else f"line {line}"


def extract_contact(name: str, pages: list[str], default_country: str, paged: bool) -> Resume:
    """Name (a heuristic), e-mail and phone from a resume's text, with where each was found.

    Every line is searched for an e-mail address and a phone number, so they are found
    wherever they are; the name is the first short line of words near the top.
    """
    resume = Resume(name)
    found = []
    lines = _lines(pages)
    for page, line, text in lines:
        if not resume.email:
            match = EMAIL_RE.search(text)
            if match:
                resume.email = match.group(0).strip(".")
                found.append(f"e-mail on {_where(page, line, paged)}")
        if not resume.phone:
            for match in phonenumbers.PhoneNumberMatcher(text, (default_country or "US").upper()):
                resume.phone = match.raw_string
                found.append(f"phone on {_where(page, line, paged)}")
                break
        if resume.email and resume.phone:
            break
    for page, line, text in lines[:15]:
        person = _name_in(text, default_country)
        if person:
            resume.name = person
            found.insert(0, f"name on {_where(page, line, paged)}")
            break
    resume.where = "; ".join(found) or "nothing recognisable was found"
    return resume


def read_pdf(name: str, data: bytes, default_country: str) -> Resume | Problem:
    """A PDF resume: its text, page by page (the first MAX_PDF_PAGES)."""
    if not data.startswith(b"%PDF"):
        return Problem(name, f"{name} is not a PDF document.")
    import logging

    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # it logs every oddity of a damaged file
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reader = PdfReader(io.BytesIO(data))
            if reader.is_encrypted:
                # Many "protected" PDFs only restrict printing and open with an empty password.
                try:
                    opened = reader.decrypt("")
                except Exception:
                    opened = 0
                if not opened:
                    return Problem(name, f"{name} is an encrypted PDF: save it without a password and upload it again.")
            pages = [page.extract_text() or "" for page in reader.pages[:MAX_PDF_PAGES]]
    except (PyPdfError, ValueError, KeyError, TypeError, OSError, RecursionError, AttributeError):
        return Problem(name, f"{name} could not be read as a PDF document.")
    if not any(p.strip() for p in pages):
        return Problem(name, f"{name} has no text to read (a scanned image?).")
    return extract_contact(name, pages, default_country, paged=True)


def read_docx(name: str, data: bytes, default_country: str) -> Resume | Problem:
    """A Word (.docx) resume: its paragraphs and table cells."""
    archive = _open_zip(name, data)
    if isinstance(archive, Problem):
        return archive
    archive.close()
    import docx

    try:
        document = docx.Document(io.BytesIO(data))
        lines = [p.text for p in document.paragraphs]
        for table in document.tables:
            for row in table.rows:
                lines.extend(cell.text for cell in row.cells)
    except Exception:  # python-docx raises many kinds for a damaged file; each means "cannot read"
        return Problem(name, f"{name} could not be read as a Word document (.docx).")
    text = "\n".join(lines)
    if not text.strip():
        return Problem(name, f"{name} has no text in it.")
    return extract_contact(name, [text], default_country, paged=False)


def read_txt(name: str, data: bytes, default_country: str) -> Resume | Problem:
    """A plain-text resume."""
    if not data.strip():
        return Problem(name, f"{name} is empty.")
    what = _looks_like(data)
    if what:
        return Problem(name, f"{name} is not a text file: it looks like {what}.")
    return extract_contact(name, [decode_text(data)], default_country, paged=False)


def read_file(name: str, data: bytes, default_country: str, sheet: str | None = None,
              in_zip: bool = False) -> list[Table | Resume | Problem]:
    """Everything one uploaded file holds (a zip gives one item per member)."""
    kind = extension(name)
    if kind in (".csv", ".tsv"):
        return [read_csv(name, data)]
    if kind == ".xlsx":
        return [read_xlsx(name, data, sheet)]
    if kind == ".pdf":
        return [read_pdf(name, data, default_country)]
    if kind == ".docx":
        return [read_docx(name, data, default_country)]
    if kind == ".txt":
        return [read_txt(name, data, default_country)]
    if kind == ".zip":
        if in_zip:
            return [Problem(name, f"{name} is a zip inside a zip: unpack it and upload the inner zip.")]
        return read_zip(name, data, default_country)
    return [Problem(name, f"{name} is not a file type read here: use CSV, Excel (.xlsx), PDF, Word (.docx), "
                          f"text (.txt), or a .zip of these.")]


def read_zip(name: str, data: bytes, default_country: str) -> list[Table | Resume | Problem]:
    """Each member of a zip read as its own file, named ``zip/member``; folders and hidden files skipped."""
    archive = _open_zip(name, data)
    if isinstance(archive, Problem):
        return [archive]
    items: list[Table | Resume | Problem] = []
    with archive:
        for info in archive.infolist():
            member = PurePosixPath(info.filename.replace("\\", "/"))
            if info.is_dir() or member.name.startswith(".") or "__MACOSX" in member.parts:
                continue
            label = f"{name}/{display_name(member.name)}"
            if info.flag_bits & 0x1:
                items.append(Problem(label, f"{label} is encrypted in the zip: zip it again without a password."))
                continue
            try:
                content = archive.read(info)
            except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError, EOFError):
                items.append(Problem(label, f"{label} could not be unpacked: the zip is damaged."))
                continue
            items.extend(read_file(label, content, default_country, in_zip=True))
    if not items:
        items.append(Problem(name, f"{name} holds no files."))
    return items

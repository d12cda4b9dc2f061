"""Reading uploaded files: every format, every encoding, and the hostile ones."""
from __future__ import annotations

import io
import zipfile

import pytest

from milo_portal.imports import parsers
from milo_portal.imports.parsers import Problem, Resume, Table
from milo_portal.imports.services import guess_mapping
from tests.imports_files import csv_bytes, docx_bytes, pdf_bytes, xlsx_bytes, zip_bomb, zip_bytes

ROWS = [["Name", "Email", "Phone"], ["Zoë Müller", "zoe@example.com", "+44 7911 123456"],
        ["Léa Perrin", "lea@example.com", ""]]


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "cp1252", "latin-1"])
def test_a_csv_is_read_in_each_delimiter_and_encoding(delimiter, encoding):
    table = parsers.read_csv("people.csv", csv_bytes(ROWS, delimiter, encoding))
    assert isinstance(table, Table)
    assert table.headers == ["Name", "Email", "Phone"]
    assert [cells for _, cells in table.rows] == [ROWS[1], ROWS[2]]
    assert [number for number, _ in table.rows] == [2, 3]


def test_bad_bytes_in_a_csv_never_crash():
    data = b"Name,Email\r\n\x81\x8d\x8f\x90\x9d Bad,bad@example.com\r\n"
    table = parsers.read_csv("bad.csv", data)
    assert isinstance(table, Table) and table.rows[0][1][1] == "bad@example.com"


@pytest.mark.parametrize("name, data, words", [
    ("empty.csv", b"", "is empty"),
    ("blank.csv", b"\r\n  \r\n", "is empty"),
    ("header.csv", b"Name,Email\r\n", "header row but no candidates"),
    ("image.csv", b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "looks like a PNG image"),
    ("big-field.csv", b'Name,Email\r\n"' + b"x" * (10 * 1024 * 1024) + b'",a@example.com\r\n', "longer than"),
    ("notes.odt", b"whatever", "not a file type read here"),
    ("fake.xlsx", b"Name,Email\r\n", "is damaged or is not what its name says"),
    ("fake.pdf", b"hello", "not a PDF"),
])
def test_a_file_that_cannot_be_read_gets_a_clear_reason(name, data, words):
    [item] = parsers.read_file(name, data, "US")
    assert isinstance(item, Problem) and words in item.reason and name in item.reason


def test_an_excel_workbook_reads_the_first_sheet_or_the_one_chosen():
    data = xlsx_bytes({"Fair": [["Prénom", "Nom", "Courriel", "Téléphone"], ["Léa", "Perrin", "lea@example.com", 447911123456]],
                       "Other": [["Email"], ["other@example.com"]]})
    first = parsers.read_xlsx("fair.xlsx", data)
    assert (first.sheet, first.sheets) == ("Fair", ["Fair", "Other"])
    assert first.rows == [(2, ["Léa", "Perrin", "lea@example.com", "447911123456"])]
    assert guess_mapping(first.headers) == ["first_name", "last_name", "email", "phone"]
    other = parsers.read_xlsx("fair.xlsx", data, "Other")
    assert other.rows == [(2, ["other@example.com"])]


@pytest.mark.parametrize("headers, expected", [
    (["Full name", "E-mail address", "Mobile", "Time zone", "Country", "Job board", "Candidate ID"],
     ["name", "email", "phone", "timezone", "country", "source_detail", "external_id"]),
    (["Prénom", "Nom", "Adresse e-mail", "Téléphone", "Pays"], ["first_name", "last_name", "email", "phone", "country"]),
    (["Vorname", "Nachname", "E-Mail-Adresse", "Handynummer", "Zeitzone"], ["first_name", "last_name", "email", "phone", "timezone"]),
    (["Nombre", "Apellidos", "Correo electrónico", "Teléfono", "País"], ["first_name", "last_name", "email", "phone", "country"]),
    (["Voornaam", "Achternaam", "E-mailadres", "Telefoonnummer", "Bron"], ["first_name", "last_name", "email", "phone", "source_detail"]),
    (["Nome completo", "Endereço de e-mail", "Telemóvel", "Fonte"], ["name", "email", "phone", "source_detail"]),
    (["Notes", "Email", "E-mail"], ["", "email", ""]),
])
def test_columns_are_guessed_from_headers_in_six_languages(headers, expected):
    assert guess_mapping(headers) == expected


def test_a_pdf_resume_gives_name_email_phone_and_where_they_were():
    resume = parsers.read_pdf("jane.pdf", pdf_bytes(["Jane Doe", "Support engineer, 5 years",
                                                     "Contact: jane.doe@example.com", "Tel +44 7911 123456"]), "US")
    assert isinstance(resume, Resume)
    assert (resume.name, resume.email, resume.phone) == ("Jane Doe", "jane.doe@example.com", "+44 7911 123456")
    assert resume.where == "name on page 1, line 1; e-mail on page 1, line 3; phone on page 1, line 4"


def test_an_encrypted_pdf_is_refused_with_the_reason():
    [item] = parsers.read_file("locked.pdf", pdf_bytes(["Jane Doe"], password="secret"), "US")
    assert isinstance(item, Problem) and "encrypted PDF" in item.reason


def test_docx_and_txt_resumes_are_read():
    docx = parsers.read_docx("max.docx", docx_bytes(["Curriculum vitae", "Max Mustermann",
                                                     "max@example.de · (415) 555-2671"]), "US")
    assert (docx.name, docx.email, docx.phone) == ("Max Mustermann", "max@example.de", "(415) 555-2671")
    assert docx.where.startswith("name on line 2")
    txt = parsers.read_txt("ana.txt", "Ana Souza\nana@example.com\n".encode("cp1252"), "US")
    assert (txt.name, txt.email, txt.phone) == ("Ana Souza", "ana@example.com", "")


def test_a_zip_of_resumes_gives_one_item_per_resume():
    data = zip_bytes({"cvs/jane.pdf": pdf_bytes(["Jane Doe", "jane@example.com"]),
                      "cvs/max.docx": docx_bytes(["Max Mustermann", "max@example.com"]),
                      "cvs/ana.txt": b"Ana Souza\nana@example.com\n", "__MACOSX/._jane.pdf": b"junk",
                      "inner.zip": zip_bytes({"a.txt": b"x"})})
    items = parsers.read_file("resumes.zip", data, "US")
    assert [(i.file, getattr(i, "email", None)) for i in items] == [
        ("resumes.zip/jane.pdf", "jane@example.com"), ("resumes.zip/max.docx", "max@example.com"),
        ("resumes.zip/ana.txt", "ana@example.com"), ("resumes.zip/inner.zip", None)]
    assert "zip inside a zip" in items[3].reason


def test_a_zip_bomb_is_refused_before_anything_is_inflated(monkeypatch):
    bomb = zip_bomb(8)
    assert len(bomb) < 64 * 1024

    def no_inflating(*args, **kwargs):
        raise AssertionError("a member was opened")

    monkeypatch.setattr(zipfile.ZipFile, "open", no_inflating)
    for name, data in (("bomb.zip", bomb), ("bomb.xlsx", bomb), ("bomb.docx", bomb)):
        [item] = parsers.read_file(name, data, "US")
        assert isinstance(item, Problem) and "zip bomb" in item.reason


def test_a_zip_larger_than_allowed_inflated_is_refused(monkeypatch):
    monkeypatch.setattr(parsers, "MAX_UNCOMPRESSED", 1000)
    [item] = parsers.read_file("big.zip", zip_bytes({"a.csv": b"Email\r\n" + b"a@example.com\r\n" * 100}), "US")
    assert isinstance(item, Problem) and "MB allowed" in item.reason


def test_xml_entities_in_an_xlsx_are_not_expanded():
    """openpyxl reads through defusedxml: a billion-laughs sheet is refused, not expanded."""
    data = xlsx_bytes({"Sheet": [["Email"], ["a@example.com"]]})
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    laughs = ('<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;">'
              '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;">]>')
    with zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            content = source.read(info)
            if info.filename == "xl/worksheets/sheet1.xml":
                head, rest = content.split(b"?>", 1) if content.startswith(b"<?xml") else (b"", content)
                content = (head + b"?>" if head else b"") + laughs.encode() + rest
            target.writestr(info, content)
    [item] = parsers.read_file("laughs.xlsx", out.getvalue(), "US")
    assert isinstance(item, Problem) and "could not be read as an Excel" in item.reason


@pytest.mark.parametrize("text, name", [
    ("Ana Souza | ana@example.com | +1 415 555 2671\nSenior Data Analyst\n", "Ana Souza"),
    ("Resume\n\nSenior Data Analyst\nAna Souza\nana@example.com\n", "Ana Souza"),
    ("ana@example.com\n+1 415 555 2671\nANA SOUZA\nSoftware Engineer\n", "Ana Souza"),
    ("Curriculum Vitae: Jean Dupont\nSoftware Engineer\n", "Jean Dupont"),
    ("Name: Ana Souza-Lima\nData Analyst\n", "Ana Souza-Lima"),
])
def test_a_txt_resume_takes_the_first_line_that_looks_like_a_persons_name(text, name):
    """Defect: a .txt resume's job title (its second line) was taken as the name."""
    resume = parsers.read_txt("cv.txt", text.encode(), "US")
    assert resume.name == name

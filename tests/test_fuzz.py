"""Fuzzing every public endpoint and the admin list filters with Hypothesis.

Whatever a client sends (paths, query strings, form bodies, JSON, headers, cookies: NUL
bytes, unicode, huge numbers, long strings), the answer is never a 5xx, and a refused
request (4xx) leaves every table as it was. Examples are derandomized so CI is
reproducible; the suite runs this file on SQLite and again on PostgreSQL.
"""
from __future__ import annotations

from datetime import timedelta
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator
from werkzeug.routing import IntegerConverter

from milo_portal.clock import now
from milo_portal.config import TestConfig
from milo_portal.extensions import db
from milo_portal.models import Answer, Candidate, Message, MessageStatus, Stage
from milo_portal.settings.services import get_settings
from tests.conftest import Auth, make_agent
from tests.test_security import database_state, raw_request

TWILIO_TOKEN = "fuzz-twilio-token"
BASE = TestConfig().MILO_PUBLIC_BASE_URL


def fuzz_settings(examples: int) -> settings:
    """Derandomized (the same examples on every run), no example database on disk, no deadline.

    Each test builds its app, client and rows (the fixtures) once and runs its examples in
    an inner @given function that shares them: sound, because every example takes its own
    "before" snapshot, and a database per example would make the fuzzing too slow for CI.
    """
    # too_slow: drawing the long strings can take a while on a busy CI machine.
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow])


# Values that broke or could break something: NUL, characters int() and str.isdigit()
# disagree on, numbers past 32 and 64 bits, separators, markup, template syntax.
HOSTILE = st.sampled_from([
    "\x00", "a\x00b", "²", "٣", "１", "99999999999999999999999", "2147483648", "9223372036854775808",
    "-1", "0", "1e9", " 1", "%00", "%", "&", "=", ";", "|", "x" * 3000, "😀", "\u202e", "\ufeff", "é", "..",
    "/", "\\", "<script>", "{{ 7*7 }}", "' OR 1=1 --", "STOP", "", " ",
])
PLAUSIBLE = st.sampled_from(["Ada Lovelace", "ada@example.com", "+14155550100", "whatsapp:+14155550100", "STOP",
                             "HELP", "start", "delivered", "failed", "30007", "SM123", "review", "One-Click",
                             "linkedin", "y", "1", "/agents", "https://evil.example/"])
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)
POISON = st.sampled_from(["\x00", "\x00", "a\x00b", "²", "9" * 25, "\ufeff", "😀", "x" * 3000])
# A value: plausible, hostile, random text, or plausible with something poisonous inside.
VALUE = st.one_of(PLAUSIBLE, HOSTILE, TEXT, st.tuples(PLAUSIBLE, POISON, st.booleans()).map(
    lambda t: t[1] + t[0] if t[2] else t[0] + t[1]))
NUMBER = st.one_of(
    st.sampled_from(["2147483647", "2147483648", "9223372036854775807", "9223372036854775808", "9" * 30, "9" * 5000,
                     "²", "٣", "-1", "0", "00001", "1.5", "0x10", "1\x00"]),
    st.integers(min_value=-(2**70), max_value=2**70).map(str), st.integers(0, 5).map(str), VALUE)
# What a real server hands a WSGI app as a header value: the wire bytes read as latin-1
# (line breaks cannot reach an application: the HTTP parser splits on them).
HEADER_VALUE = VALUE.map(lambda s: s.encode("utf-8").decode("latin-1").replace("\r", "").replace("\n", ""))
ANY_METHOD = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])

STAGES = [Stage.INVITED, Stage.CLICKED, Stage.STARTED, Stage.COMPLETED, Stage.OPTED_OUT]
FRESH = "<fresh>"  # stands for a new candidate's token (or its invite's id), made just before sending


@pytest.fixture()
def world(app, client, user):
    """An agent with a candidate in each stage, settings, a CSRF token, and a maker of fresh candidates."""
    get_settings(db.session)
    agent = make_agent("Fuzzed role")
    question_ids = [q.id for q in agent.questions]
    made = iter(range(10**6))

    def fresh(stage: str) -> tuple[str, str]:
        """A new candidate in ``stage`` with a sent invite: its token and the invite's id."""
        number = next(made)
        c = Candidate(agent_id=agent.id, name=f"Person {number}", email=f"p{number}@example.com",
                      phone=f"+1415555{number % 10000:04d}", timezone="UTC", stage=stage,
                      deadline_at=now() + timedelta(days=5))
        db.session.add(c)
        db.session.flush()
        message = Message(candidate_id=c.id, kind="invite", step=1, channel="email", status=MessageStatus.SENT,
                          scheduled_for=now())
        db.session.add(message)
        if stage == Stage.COMPLETED:
            db.session.add_all([Answer(candidate_id=c.id, question_id=q, position=i, question_text="Why?",
                                       body="Because.", answered_at=now()) for i, q in enumerate(question_ids, 1)])
        db.session.commit()
        return c.token, str(message.id)

    tokens = [fresh(stage)[0] for stage in STAGES]
    app.config["TWILIO_AUTH_TOKEN"] = TWILIO_TOKEN
    return {"tokens": tokens, "share": agent.share_token, "fresh": fresh, "csrf": client.csrf_token()}


def _segment(value: str) -> str:
    return quote(value, safe="")


def _send(client, method, path, query=None, form=None, headers=None, **kwargs):
    if query:
        path += "?" + urlencode(query)
    body = {"data": form} if form and method not in ("GET", "HEAD") else {}
    response = client.open(path, method=method, headers=headers or {}, **body, **kwargs)
    response.get_data()  # a streamed body (CSV export) fails while it is read, not before
    return response


def spoiled(valid: str, hostile=None):
    """A hostile value in place of a valid one: the valid one with poison inside, or any value."""
    poisoned = st.tuples(POISON, st.booleans()).map(lambda t: t[0] + valid if t[1] else valid + t[0])
    return st.one_of(poisoned, poisoned, VALUE if hostile is None else hostile)


# Every public endpoint: its path (with {token}, {share}, {n}), its methods (the one that
# uses the input first), a valid form and query string, and the stage of a candidate for
# whom the request is valid.
PUBLIC = {
    "landing": ("/i/{token}", ["GET"], {}, {}, Stage.INVITED),
    "start": ("/i/{token}/start", ["POST"], {"name": "Ada Lovelace", "email": "ada{i}@example.com"}, {},
              Stage.CLICKED),
    "question": ("/i/{token}/q/{n}", ["POST", "GET"], {"answer": "Because I like it.", "then": "review"}, {},
                 Stage.STARTED),
    "review": ("/i/{token}/review", ["GET"], {}, {}, Stage.STARTED),
    "submit": ("/i/{token}/submit", ["POST"], {}, {}, Stage.STARTED),
    "done": ("/i/{token}/done", ["GET"], {}, {}, Stage.COMPLETED),
    "share": ("/s/{share}", ["POST", "GET"],
              {"name": "Eve Example", "email": "eve{i}@example.com", "phone": "+1415666{i:04d}"}, {"src": "linkedin"},
              Stage.INVITED),
    "open pixel": ("/t/o/{token}/{n}.gif", ["GET"], {}, {}, Stage.INVITED),
    "unsubscribe": ("/u/{token}", ["POST", "GET"], {"List-Unsubscribe": "One-Click"}, {}, Stage.INVITED),
    "twilio status": ("/hooks/twilio/status", ["POST"],
                      {"MessageSid": "SM{i}", "MessageStatus": "delivered", "ErrorCode": "30007"}, {}, Stage.INVITED),
    "twilio inbound": ("/hooks/twilio/inbound", ["POST"],
                       {"MessageSid": "SM{i}", "From": "+14155550100", "Body": "STOP"}, {}, Stage.INVITED),
    "healthz": ("/healthz", ["GET"], {}, {}, Stage.INVITED),
    "login": ("/login", ["POST", "GET"], {"email": "rita@example.com", "password": "wrong", "remember": "y"},
              {"next": "/agents"}, Stage.INVITED),
}
HEADERS = ("User-Agent", "X-Twilio-Signature", "HX-Request", "Accept-Language")


@st.composite
def public_requests(draw, world, template, methods, form, query, stage):
    """A valid request to one public endpoint, then a copy of it for each of its parts (path
    values, method, each field, headers) with that part made hostile, then one with all of
    them hostile. One hostile part at a time gets past the checks of the others and reaches
    the view's database work; each copy gets a fresh candidate and fresh values (e-mail,
    message id), so an earlier copy cannot have used them up."""
    i = draw(st.integers(0, 499))
    valid = {"token": FRESH, "share": world["share"], "n": FRESH if ".gif" in template else draw(
        st.sampled_from(["1", "2", "3"])), "method": methods[0], "stage": stage,
        **{f"form:{k}": v for k, v in form.items()}, **{f"query:{k}": v for k, v in query.items()}}
    parts = [p for p in valid if p in ("method", "stage") or p.split(":")[0] in ("form", "query")
             or "{" + p + "}" in template]
    real = {"token": draw(st.sampled_from(world["tokens"])), "n": "1"}  # what a hostile value is made from
    hostile = {p: draw(spoiled(real.get(p, valid[p]).format(i=i), NUMBER if p == "n" else None)) for p in parts}
    hostile["method"] = draw(st.one_of(st.sampled_from(methods), ANY_METHOD))
    hostile["stage"] = draw(st.sampled_from(STAGES))
    headers = draw(st.fixed_dictionaries({}, optional={h: HEADER_VALUE for h in HEADERS}))
    extra_form = draw(st.dictionaries(VALUE, VALUE, max_size=2))
    extra_query = draw(st.dictionaries(VALUE, VALUE, max_size=2))
    with_csrf = draw(st.booleans())
    signed = template.startswith("/hooks/") and draw(st.integers(0, 3)) > 0
    requests = []
    for copy, spoil in enumerate([set(), *({p} for p in [*parts, "headers"]), {*parts, "headers"}]):
        chaos = len(spoil) > 1
        value = {p: hostile[p] if p in spoil else v.format(i=i * 20 + copy) for p, v in valid.items()}
        request_form = {k[5:]: v for k, v in value.items() if k.startswith("form:")}
        request_query = {k[6:]: v for k, v in value.items() if k.startswith("query:")}
        if chaos:
            request_form.update(extra_form)
            request_query.update(extra_query)
        if not chaos or with_csrf:
            request_form["csrf_token"] = world["csrf"]  # past the CSRF check, to the view itself
        request_headers = dict(headers) if "headers" in spoil else {}
        if signed:
            request_query = {}
            request_headers["X-Twilio-Signature"] = RequestValidator(TWILIO_TOKEN).compute_signature(
                BASE + template, request_form)
        requests.append((value["method"], value, request_query, request_form, request_headers, signed))
    return requests


@pytest.mark.parametrize("endpoint", PUBLIC)
def test_public_endpoints_never_answer_5xx_and_refusals_write_nothing(app, client, world, endpoint):
    template = PUBLIC[endpoint][0]

    @fuzz_settings(15)
    @given(requests=public_requests(world, *PUBLIC[endpoint]))
    def fuzz(requests):
        for method, value, query, form, headers, signed in requests:
            token, message_id = world["fresh"](value["stage"]) if "{token}" in template else ("", "")
            path = template.format(token=_segment(token if value["token"] == FRESH else value["token"]),
                                   share=_segment(value["share"]),
                                   n=_segment(message_id if value["n"] == FRESH else value["n"]))
            before = database_state()
            response = _send(client, method, path, query, form, headers)
            assert response.status_code < 500, (response.status_code, method, path)
            if response.status_code >= 400:
                assert database_state() == before, (response.status_code, method, path)
            if path.startswith("/hooks/") and not signed:
                assert 400 <= response.status_code < 500  # unsigned or badly signed: refused
            if path.startswith(("/i/", "/s/", "/t/", "/u/")):
                assert response.headers.get("Cache-Control") == "no-store", (response.status_code, method, path)

    fuzz()


def test_public_json_bodies_never_answer_5xx(app, client, world):
    documents = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), VALUE),
                             lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                     st.dictionaries(VALUE, inner, max_size=3)), max_leaves=8)

    @fuzz_settings(40)
    @given(path=st.sampled_from(["/hooks/twilio/status", "/hooks/twilio/inbound", f"/s/{world['share']}",
                                 f"/i/{world['tokens'][0]}/start", "/login"]),
           document=documents, raw=st.sampled_from(['"\\u0000"', '"\\ud800"', '{"a": "\\udfff"}', "{", "[1,", "\x00"]))
    def fuzz(path, document, raw):
        before = database_state()
        for kwargs in ({"json": document}, {"data": raw, "content_type": "application/json"}):
            response = _send(client, "POST", path, **kwargs)
            assert response.status_code < 500, (response.status_code, path, kwargs)
            if response.status_code >= 400:
                assert database_state() == before

    fuzz()


# The admin lists and the filters their views read from the query string.
ADMIN = {
    "/candidates": ["agent_id", "page", "ids", "stage", "source", "channel", "q", "sort", "dir"],
    "/candidates/export.csv": ["agent_id", "ids", "stage", "source", "channel", "q", "sort", "dir"],
    "/agents": ["archived"],
    "/outbox": ["status", "page"],
    "/candidates/new": ["agent_id"],
    "/candidates/add/bulk": ["agent_id"],
    "/candidates/{n}": ["added"],
    "/agents/{n}/candidates": ["page", "q"],
    "/agents/{n}": [],
}


@pytest.mark.parametrize("path", ADMIN)
def test_admin_list_filters_never_answer_5xx_and_write_nothing(app, client, world, path):
    Auth(client).login()
    args = ADMIN[path]
    pairs = st.tuples(st.sampled_from(args), NUMBER) if args else st.tuples(VALUE, VALUE)
    htmx = {"HX-Request": "true", "HX-Target": "candidate-results"}

    @fuzz_settings(25)
    @given(number=NUMBER.filter(bool), query=st.lists(pairs, max_size=5), headers=st.sampled_from([{}, htmx]))
    def fuzz(number, query, headers):
        before = database_state()
        response = _send(client, "GET", path.format(n=_segment(number)), query, headers=headers)
        assert response.status_code < 500, (response.status_code, path, query)
        assert database_state() == before, (response.status_code, path, query)  # a GET writes nothing here

    fuzz()


def _every_route(app) -> list[str]:
    paths = set()
    with app.test_request_context():
        from flask import url_for

        for rule in app.url_map.iter_rules():
            values = {arg: 1 if isinstance(rule._converters[arg], IntegerConverter) else "svg"
                      for arg in rule.arguments}
            paths.add(url_for(rule.endpoint, **values))
    return sorted(paths)


HOSTS = st.one_of(
    st.sampled_from(["a" * 64 + ".example.com", "a..b", ".example.com", "example.com.", "[::1]", "[::1",
                     "example.com:99999999", "example.com:abc", "ex ample.com", "xn--", "xn--a.com", "xn--zz",
                     "é.example", "Ã©.example", "\x00.example.com", "-a-.example", "a" * 300, ""]),
    HEADER_VALUE)
COOKIE_VALUES = st.one_of(HEADER_VALUE, st.sampled_from(["abc|é", "1|" + "a" * 128, "|", "1|\x00", "é"]))


def test_hostile_hosts_and_cookies_never_answer_5xx_on_any_route(app, world):
    @fuzz_settings(150)
    @given(path=st.sampled_from(_every_route(app)), method=st.sampled_from(["GET", "POST"]), host=HOSTS,
           remember=COOKIE_VALUES, session_cookie=COOKIE_VALUES)
    def fuzz(path, method, host, remember, session_cookie):
        before = database_state()
        cookies = f"remember_token={remember}; milo_session={session_cookie}"
        status, _, _ = raw_request(app, method, path, {"Host": host, "Cookie": cookies})
        assert status < 500, (status, method, path, host)
        if status >= 400:
            assert database_state() == before, (status, method, path)

    fuzz()


def test_the_fingerprint_sees_every_kind_of_change_a_request_makes(app, world):
    """The fuzzing's "nothing written" check is only as good as database_state()."""
    from milo_portal.models import Event

    candidate = db.session.query(Candidate).filter_by(stage=Stage.STARTED).one()
    message = db.session.query(Message).filter_by(candidate_id=candidate.id).one()
    changes = [
        lambda: setattr(candidate, "name", "Someone else"),
        lambda: setattr(candidate, "opted_out_sms", True),
        lambda: setattr(message, "status", MessageStatus.CANCELLED),
        lambda: setattr(message, "provider_id", "SM1"),
        lambda: db.session.add(Event(candidate_id=candidate.id, agent_id=candidate.agent_id, type="clicked",
                                     at=now())),
        lambda: db.session.add(Answer(candidate_id=candidate.id, position=1, question_text="Why?", body="Hm.",
                                      answered_at=now())),
        lambda: setattr(db.session.query(Answer).first(), "answered_at", now()),  # a new answer, same length
    ]
    for change in changes:
        before = database_state()
        change()
        db.session.commit()
        assert database_state() != before

"""The Metrics page over HTTP: filters in the URL, htmx fragments, drill-down to exactly the
counted people, CSV exports, red-flag thresholds, and one definition with the agents pages."""
from __future__ import annotations

import csv
import io
import re
from urllib.parse import parse_qs

import pytest
from sqlalchemy import select
from werkzeug.datastructures import MultiDict

from milo_portal.candidates import services as candidates
from milo_portal.extensions import db
from milo_portal.metrics import definitions, services
from milo_portal.models import Candidate, Message
from tests import metrics_data
from tests.metrics_data import NOW, RANGE

QS = "period=custom&from=2026-11-01&to=2026-11-19"


@pytest.fixture()
def data(app, monkeypatch):
    # The page reads the clock: put it where the dataset was built.
    monkeypatch.setattr("milo_portal.metrics.views.now", lambda: NOW)
    return metrics_data.build()


def names_behind(client, href: str) -> set[str]:
    body = client.get(href.replace("&amp;", "&")).get_data(as_text=True)
    return set(re.findall(r">(P\d+)</a>", body))


def test_filters_round_trip_through_the_url():
    args = MultiDict({**RANGE, "agent_id": "7", "source": "share_link", "src": "linkedin", "channel": "sms",
                      "level": "senior"})
    f, errors = definitions.parse(args, NOW, "Europe/Berlin")
    assert errors == {}
    again, _ = definitions.parse(MultiDict(parse_qs(f.qs())), NOW, "Europe/Berlin")
    assert again == f
    # Berlin's 1 November starts at 23:00 UTC the day before.
    assert f.since.isoformat() == "2026-10-31T23:00:00+00:00"


def test_bad_filters_get_a_message_by_the_field_not_an_error(auth, client, data):
    response = client.get("/metrics?period=custom&from=2026-11-19&to=2026-11-01&agent_id=abc&channel=fax")
    body = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "The end date is before the start date." in body and 'aria-invalid="true"' in body
    assert client.get("/metrics?period=custom&from=nonsense").status_code == 200


def test_a_bad_range_sent_by_the_in_place_filters_loads_the_whole_page_with_its_message(auth, client, data):
    """Defect: only the figures were swapped, so the message next to the date never showed
    and the page quietly showed the last 30 days."""
    bad = "/metrics?period=custom&from=2026-11-20&to=2026-11-10"
    response = client.htmx_get(bad, headers={"HX-Target": "metrics-figures"})
    assert response.headers.get("HX-Redirect") == bad
    body = client.get(response.headers["HX-Redirect"]).get_data(as_text=True)
    assert "The end date is before the start date." in body and 'aria-invalid="true"' in body
    # The custom range stays chosen beside its message (it went back to "the last 30 days").
    assert '<option value="custom" selected' in body and '<option value="30" selected' not in body


def test_choosing_a_custom_range_waits_for_both_dates(auth, client, data):
    """The in-place filters send "a custom range" as soon as it is chosen, then again after
    each date: nothing is redrawn until both dates are in."""
    for qs in ("period=custom&from=&to=", "period=custom&from=2026-11-01&to="):
        response = client.htmx_get(f"/metrics?{qs}", headers={"HX-Target": "metrics-figures"})
        assert response.status_code == 204 and not response.get_data()
    body = client.get("/metrics?period=custom&from=&to=").get_data(as_text=True)  # without JavaScript
    assert "Enter both dates" in body and '<option value="custom" selected' in body


def test_the_page_keeps_its_filters_and_htmx_gets_only_the_figures(auth, client, data):
    full = client.get(f"/metrics?{QS}&agent_id={data['agent_b']}").get_data(as_text=True)
    assert "<html" in full and f'<option value="{data["agent_b"]}" selected' in full
    fragment = client.htmx_get(f"/metrics?{QS}&agent_id={data['agent_b']}",
                               headers={"HX-Target": "metrics-figures"}).get_data(as_text=True)
    assert "<html" not in fragment and fragment.lstrip().startswith("<div id=\"metrics-figures\"")
    assert "Funnel from invited to completed" in fragment  # the chart's title


def test_a_drill_down_link_lists_exactly_the_counted_people(auth, client, data):
    body = client.get(f"/metrics?{QS}").get_data(as_text=True)
    expected = {"clicked_not_started": {"P7"}, "never_started": {"P2", "P3", "P6", "P7", "P11", "P12"},
                "opened_not_clicked": {"P2", "P12"}, "failed": {"P4"}, "completed": {"P1", "P8"},
                "machine_opened_only": {"P3"}, "visited_only": {"P6"}}
    for who, people in expected.items():
        href = re.search(r'href="(/candidates\?metric=' + who + r'&[^"]*)"', body).group(1)
        assert names_behind(client, href) == people, who
    # A by-table cell: completed on a phone.
    href = re.search(r'href="(/candidates\?metric=completed&amp;metric_dim=device&amp;metric_value=mobile[^"]*)"',
                     body).group(1)
    assert names_behind(client, href) == {"P8"}
    # The question where most leave.
    href = re.search(r'href="(/candidates\?metric=left_at[^"]*)">1</a>', body).group(1)
    assert names_behind(client, href) == {"P5"}


def test_drill_down_links_are_the_addresses_url_for_builds(app):
    """The page builds its thousand links itself, for speed: each must be exactly the address
    ``url_for`` would build, whatever the value (numbers, tags with spaces, & and %, none)."""
    from flask import url_for

    from milo_portal.metrics.views import _drill_links

    f, _ = definitions.parse(MultiDict({**RANGE, "src": "job board & co"}), NOW, "UTC")
    with app.test_request_context():
        drill = _drill_links(f)
        for who, dim, value in [("invited", None, None), ("completed", "heat", 0), ("completed", "heat", 167),
                                ("delivered", "src", ""), ("delivered", "src", "spring fair/2026 & more 100%"),
                                ("left_at", None, "3:2"), ("opened", "device", "mobile"), ("started", "agent", 12),
                                ("invited", "src", "é ü"), ("invited", "followups", 3)]:
            args = {k: v for k, v in (("metric", who), ("metric_dim", dim), ("metric_value", value)) if v is not None}
            expected = url_for("candidates.index", **args) + ("&" if args else "?") + f.drill()
            assert drill(who, dim, value) == expected, (who, dim, value)
            # ...twice: the parts kept for the page give the same address again.
            assert drill(who, dim, value) == expected


def test_every_drill_down_counts_what_the_figure_says(app, data):
    f, _ = definitions.parse(MultiDict(RANGE), NOW, "UTC")
    page = services.page(db.session, f)
    args = dict(parse_qs(f.drill()))
    args = {k: v[0] for k, v in args.items()}
    for who, count in page["funnel"]["counts"].items():
        listed = candidates.list_candidates(db.session, candidates.ListFilters(metric=who, metric_args=args))
        assert listed.total == count, who
    for row in page["by"]["channel"]:
        listed = candidates.list_candidates(db.session, candidates.ListFilters(
            metric="delivered", metric_dim="channel", metric_value=row["key"], metric_args=args))
        assert listed.total == row["delivered"]


def test_the_times_questions_and_deliverability_figures_link_to_their_people(auth, client, data):
    """Every figure links to the people behind it, the step counts, the per-question counts
    and the per-channel message counts too (they once were plain numbers)."""
    body = client.get(f"/metrics?{QS}").get_data(as_text=True)
    f, _ = definitions.parse(MultiDict(RANGE), NOW, "UTC")
    page = services.page(db.session, f)
    drill = "&" + f.drill()

    def listed(**kw) -> set[str]:
        href = "/candidates?" + "&".join(f"{k}={v}" for k, v in kw.items())
        if "fax" not in href:  # (a link the page shows)
            assert 'href="' + href.replace("&", "&amp;") + "&amp;" in body.replace("%3A", ":"), kw
        return names_behind(client, href + drill)

    assert [s["n"] for s in page["times"]["steps"]] != [0, 0, 0, 0]
    for step in page["times"]["steps"]:
        people = listed(metric="step_time", metric_dim="step", metric_value=step["key"])
        assert len(people) == step["n"], step["key"]
    rows = page["questions"]["rows"]
    assert any(q["reached"] for q in rows) and any(q["answered"] for q in rows)
    for q in rows:
        value = f"{q['agent_id']}:{q['position']}"
        reached, answered = listed(metric="reached", metric_value=value), listed(metric="answered", metric_value=value)
        assert (len(reached), len(answered)) == (q["reached"], q["answered"]) and answered <= reached, value
    # The e-mail row counts messages; its people are those of the range with such a message.
    email = next(r for r in page["delivery"]["channels"] if r["key"] == "email")
    in_range = listed(metric="invited") | listed(metric="link_only")
    owners = {c.name for c in db.session.scalars(
        select(Candidate).join(Message, Message.candidate_id == Candidate.id)
        .where(Message.channel == "email", Message.status.not_in(("cancelled", "suppressed"))))}
    sent = {c.name for c in db.session.scalars(
        select(Candidate).join(Message, Message.candidate_id == Candidate.id)
        .where(Message.channel == "email", Message.sent_at.is_not(None)))}
    assert email["messages"] and listed(metric="message_any", metric_dim="channel", metric_value="email") == owners & in_range
    assert listed(metric="message_sent", metric_dim="channel", metric_value="email") == sent & in_range
    assert listed(metric="message_any", metric_dim="channel", metric_value="fax") == set()


def test_a_malformed_drill_down_lists_nobody(auth, client, data):
    assert names_behind(client, "/candidates?metric=completed&since=yesterday") == set()
    assert names_behind(client, "/candidates?metric=nonsense&since=2026-11-01T00:00:00%2B00:00"
                                "&until=2026-11-20T00:00:00%2B00:00") == set()


def test_every_table_exports_to_csv_with_formula_cells_neutralised(auth, client, data):
    db.session.get(Candidate, data["P7"]).source_detail = "=HYPERLINK(\"http://x\")"
    db.session.commit()
    for table in services.TABLES:
        response = client.get(f"/metrics/{table}.csv?{QS}")
        assert response.status_code == 200 and response.mimetype == "text/csv", table
    rows = list(csv.reader(io.StringIO(client.get(f"/metrics/by-src.csv?{QS}").get_data(as_text=True))))
    assert ["'=HYPERLINK(\"http://x\")", "1", "1", "0", "0", "0.0000", "0"] in rows
    funnel = list(csv.reader(io.StringIO(client.get(f"/metrics/funnel.csv?{QS}").get_data(as_text=True))))
    assert funnel[1][:2] == ["invited", "10"] and funnel[6][:2] == ["completed", "2"]
    assert client.get(f"/metrics/nothing.csv?{QS}").status_code == 404
    assert [services.csv_safe(v) for v in ("+1", "-2", "@x", "\tx", "\rx", "ok")] == [
        "'+1", "'-2", "'@x", "'\tx", "'\rx", "ok"]


def test_agents_list_agent_page_and_metrics_agree(auth, client, data):
    """One definition: the agent page's funnel is the Metrics page's for that agent (all time)."""
    body = " ".join(client.get(f"/agents/{data['agent_a']}").get_data(as_text=True).split())
    # Agent A all time: P1, P2, P3, P4, P5, P9, P12 invited; P4 failed; clicked P1 P5 P9; completed P1 P9.
    assert "7 invited → 3 clicked → 3 started → 2 completed" in body
    assert "33 %</strong> completion of 6 delivered" in body
    listed = " ".join(client.get("/agents").get_data(as_text=True).split())
    assert 'aria-label="Funnel: 7 invited, 3 clicked, 3 started, 2 completed"' in listed


# --- red flags: each threshold, both sides --------------------------------------------------

def _inputs(**c):
    counts = dict(invited=100, delivered=100, opened=50, clicked=50, started=40, completed=30, friday_invite=0,
                  outside_window=0, late_invite=0)
    counts.update(c)
    return {"counts": counts}


def _flags(funnel=None, domains=(), devices=(), email=None, worst=None):
    return {fl.key for fl in services.red_flags(funnel or _inputs(), {"worst": worst}, {"domains": list(domains)},
                                                list(devices), email or {"delivered": 100, "opened": 50})}


def test_low_open_rate_flag_threshold():
    assert "low_open" in _flags(email={"delivered": 100, "opened": 19})
    assert "low_open" not in _flags(email={"delivered": 100, "opened": 20})
    assert "low_open" not in _flags(email={"delivered": 19, "opened": 0})  # too few to say


def test_high_start_low_completion_flag_threshold_names_the_question():
    worst = {"position": 4, "agent": "Picker", "text": "Describe a time…", "left": 9}
    flags = services.red_flags(_inputs(clicked=50, started=50, completed=29), {"worst": worst},
                               {"domains": []}, [], {"delivered": 100, "opened": 50})
    flag = next(fl for fl in flags if fl.key == "low_completion")
    assert "question 4 of Picker" in flag.fix
    assert "low_completion" not in _flags(_inputs(clicked=50, started=50, completed=30))


def test_clicks_without_starts_flag_threshold():
    assert "clicks_no_starts" in _flags(_inputs(clicked=100, started=49, completed=40))
    assert "clicks_no_starts" not in _flags(_inputs(clicked=100, started=50, completed=40))


def test_failed_sends_to_one_domain_flag_threshold():
    row = {"key": "corp.example", "messages": 10, "failed": 2, "failure_rate": 0.2}
    assert "domain_corp.example" in _flags(domains=[row])
    assert "domain_corp.example" not in _flags(domains=[dict(row, failed=1, failure_rate=0.1)])
    assert "domain_corp.example" not in _flags(domains=[dict(row, messages=9, failure_rate=2 / 9)])


def test_friday_window_and_late_invite_flag_thresholds():
    assert {"friday", "window", "late"} <= _flags(_inputs(friday_invite=20, outside_window=20, late_invite=25))
    assert not {"friday", "window", "late"} & _flags(_inputs(friday_invite=19, outside_window=19, late_invite=24))


def test_phone_completion_far_below_desktop_flag_threshold():
    desktop = {"key": "desktop", "started": 40, "completed": 32, "start_completion": 0.80}
    low = {"key": "mobile", "started": 40, "completed": 25, "start_completion": 0.64}
    close = {"key": "mobile", "started": 40, "completed": 26, "start_completion": 0.65}
    assert "phone" in _flags(devices=[desktop, low])
    assert "phone" not in _flags(devices=[desktop, close])


def test_flags_are_computed_from_the_data(app, data):
    """The flags read the dataset's figures: P8 was invited two days after being added, and
    one late invite of ten stays under the 25 % threshold; nothing else crosses one."""
    f, _ = definitions.parse(MultiDict(RANGE), NOW, "UTC")
    defs = services.defs_for(db.session)
    fun = services.funnel(db.session, defs, f)
    assert fun["counts"]["late_invite"] == 1
    flags = services.red_flags(fun, {"worst": None}, {"domains": []}, [], {"delivered": 6, "opened": 3},
                               min_base=10)
    assert "late" not in {fl.key for fl in flags}
    flags = services.red_flags(fun, {"worst": None}, {"domains": []}, [], {"delivered": 6, "opened": 3},
                               min_base=4)
    # opened 3 of 6 e-mails: not low; 2 of 3 started completed: above 60 %.
    assert {fl.key for fl in flags} == set()


def test_demo_history_fills_the_page_and_fires_red_flags_on_purpose(runner, app, monkeypatch):
    """demo-data --days: drop-offs differ by channel, device, weekday, question and variant.

    At a chosen instant: the demo history is drawn back from "now", and with the wall clock
    the small groups behind a flag (desktop starters) came out under its minimum at some
    hours of the day."""
    from milo_portal import clock
    from tests.conftest import at

    instant = at("2026-11-26T12:00:00")
    monkeypatch.setattr(clock, "now", lambda: instant)
    now = clock.now

    result = runner.invoke(args=["milo", "demo-data", "--candidates", "2500", "--days", "60", "--seed", "5"])
    assert result.exit_code == 0, result.output
    oldest = db.session.scalar(db.select(db.func.min(Candidate.created_at)))
    assert now() - oldest > __import__("datetime").timedelta(days=55)
    f, _ = definitions.parse(MultiDict({"period": "90"}), now(), "UTC")
    page = services.page(db.session, f)
    by_channel = {r["key"]: r["completion"] for r in page["by"]["channel"]}
    assert by_channel["whatsapp"] > by_channel["email"]
    worst = page["questions"]["worst"]
    assert (worst["agent"], worst["position"]) == ("Customer support specialist", 2)
    assert {"friday", "phone", "domain_corp-mail.example"} <= {fl.key for fl in page["flags"]}
    assert page["funnel"]["counts"]["machine_opened"] > 0 and page["ab"], "machine opens and an A/B test"
    (email_test,) = [t for t in page["ab"] if t["channel"] == "email"]
    a, b = email_test["variants"][:2]
    assert b["click_rate"] > a["click_rate"]

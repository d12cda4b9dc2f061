"""Defects a new user's trial of the Metrics page found: the date range's days and label, link-only
candidates counted one way on the agent page and the Metrics page, the opt-out spike after a
template change, and deliverability filtered by invite date. SQLite and PostgreSQL alike."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest
from werkzeug.datastructures import MultiDict

from milo_portal.extensions import db
from milo_portal.metrics import definitions, services
from milo_portal.models import Candidate, Event, Message, Template, TemplateVersion
from milo_portal.public import services as public
from milo_portal.settings.services import settings_for_update
from tests import metrics_data
from tests.conftest import at, make_agent
from tests.metrics_data import NOW, RANGE


def _clock(monkeypatch, moment):
    monkeypatch.setattr("milo_portal.metrics.views.now", lambda: moment)


def _team_zone(name: str) -> None:
    settings_for_update(db.session).default_timezone = name
    db.session.commit()


def _text(response) -> str:
    return " ".join(response.get_data(as_text=True).split())


# --- 2. the date range: whole days in the team's zone, ending today, said exactly ---------------

def test_last_7_days_are_whole_team_days_ending_today_not_tomorrow(auth, client, monkeypatch):
    """Defect: "last 7 days" was labelled as ending tomorrow (the range's exclusive end, in UTC),
    and the range followed the viewer's zone, not the team's."""
    # 12:00 UTC on Friday 20 November is 01:00 on Saturday 21 November in Auckland (UTC+13).
    moment = at("2026-11-20T12:00:00")
    _clock(monkeypatch, moment)
    _team_zone("Pacific/Auckland")
    agent = make_agent("Picker")
    for name, invited in (("Early", "2026-11-14T10:00"),   # 23:00 on 14 Nov in Auckland: a day too early
                          ("First", "2026-11-14T11:00"),   # 00:00 on 15 Nov: the first day
                          ("Today", "2026-11-20T11:30")):  # 00:30 on 21 Nov: today
        db.session.add(Candidate(agent_id=agent.id, name=name, email=f"{name.lower()}@example.com",
                                 stage="invited", invited_at=at(invited), created_at=at(invited),
                                 deadline_at=moment + timedelta(days=5)))
    db.session.commit()

    f, errors = definitions.parse(MultiDict({"period": "7"}), moment, "Pacific/Auckland")
    assert errors == {}
    assert (f.first_day.isoformat(), f.last_day.isoformat()) == ("2026-11-15", "2026-11-21")
    assert f.since == at("2026-11-14T11:00:00") and f.until == at("2026-11-21T11:00:00")

    body = _text(client.get("/metrics?period=7"))
    label = re.search(r'id="metrics-range">(.*?)</p>', body).group(1)
    assert "<strong>Sun 15 Nov 2026</strong> to <strong>Sat 21 Nov 2026</strong>, both days included" in label
    assert "Pacific/Auckland" in label and "22 Nov" not in label
    invited = re.search(r'<th scope="row">Invited</th> <td class="num" data-label="Candidates"><a href="([^"]*)">(\d+)</a>',
                        body)
    assert invited.group(2) == "2"  # First and Today, not Early
    # The drill-down's list says the same days (the last one included, not the day after).
    listed = _text(client.get(invited.group(1).replace("&amp;", "&")))
    assert "invited Sun 15 Nov 2026 to Sat 21 Nov 2026." in listed
    assert ">First</a>" in listed and ">Today</a>" in listed and ">Early</a>" not in listed


def test_a_custom_range_includes_its_end_date_whole_and_nothing_after():
    """Defect: the custom range's end was inclusive in the filter but shown as the next day."""
    f, errors = definitions.parse(MultiDict({"period": "custom", "from": "2026-11-19", "to": "2026-11-20"}), NOW,
                                  "Europe/Berlin")
    assert errors == {}
    assert (f.first_day.isoformat(), f.last_day.isoformat()) == ("2026-11-19", "2026-11-20")
    assert f.since == at("2026-11-18T23:00:00") and f.until == at("2026-11-20T23:00:00")
    assert definitions.day_span(*(v.astimezone(definitions._zone("Europe/Berlin")) for v in (f.since, f.until))) == \
        "Thu 19 Nov 2026 to Fri 20 Nov 2026"


# --- 3. link-only candidates: one definition for the agent page and the Metrics page -------------

def test_agent_page_and_metrics_agree_on_a_mix_of_invited_and_link_only_candidates(auth, client, monkeypatch):
    """Defect: the agent page's funnel line and the Metrics page counted people who came through the
    share link (never sent an invite) differently; now both enter them at "clicked"."""
    moment = at("2026-11-10T10:00:00")
    _clock(monkeypatch, at("2026-11-20T12:00:00"))
    agent = make_agent("Picker", questions=("Q1?", "Q2?"))
    metrics_data._person(agent, "I1", stage="completed", invited="2026-11-02T10:00", clicked="2026-11-02T11:00",
                         started="2026-11-02T11:05", completed="2026-11-02T11:30")
    metrics_data._person(agent, "I2", stage="clicked", invited="2026-11-03T10:00", clicked="2026-11-03T12:00")
    metrics_data._person(agent, "I3", stage="invited", invited="2026-11-04T10:00")
    db.session.commit()
    # Two people through the share link, the real way: one stops, one completes.
    public.join_via_share(db.session, agent, "L1", "l1@example.com", "", "linkedin", moment, "Mozilla/5.0 (iPhone)",
                          "GB", "UTC")
    l2 = public.join_via_share(db.session, agent, "L2", "l2@example.com", "", None, moment, "Mozilla/5.0", "GB",
                               "UTC").candidate
    public.answer(db.session, l2, 1, "yes", moment + timedelta(minutes=2))
    public.answer(db.session, l2, 2, "yes", moment + timedelta(minutes=4))
    public.complete(db.session, l2, moment + timedelta(minutes=5))
    db.session.commit()
    assert l2.invited_at is None

    expected = {"invited": 3, "delivered": 3, "link_only": 2, "clicked": 4, "started": 3, "completed": 2,
                "reached": 5}
    funnel = services.agent_funnels(db.session, [agent.id])[agent.id]
    assert {k: funnel[k] for k in expected} == expected and funnel["completion"] == pytest.approx(2 / 5)
    f, _ = definitions.parse(MultiDict({**RANGE, "agent_id": str(agent.id)}), NOW, "UTC")
    page = services.page(db.session, f)
    c = page["funnel"]["counts"]
    assert {k: c[k] for k in expected if k != "reached"} == {k: v for k, v in expected.items() if k != "reached"}
    assert page["funnel"]["reached"] == 5 and page["funnel"]["completion"] == pytest.approx(2 / 5)
    steps = {s.who: s for s in page["funnel"]["steps"]}
    # Clicked of those who opened an invite (I1, I2: a click is an open) plus those who came by the link.
    assert (steps["opened"].count, steps["clicked"].step_rate) == (2, pytest.approx(4 / 4))
    assert steps["completed"].overall == pytest.approx(2 / 5)
    assert all(s.step_rate is None or s.step_rate <= 1 for s in steps.values())
    (row,) = page["by"]["agent"]
    assert (row["link_only"], row["completion"]) == (2, pytest.approx(2 / 5))

    agent_page = _text(client.get(f"/agents/{agent.id}"))
    assert "40 %</strong> completion of 3 delivered invites and 2 people by a link without an invite" in agent_page
    assert "3 invited → 4 clicked → 3 started → 2 completed" in agent_page
    listed = _text(client.get("/agents"))
    # More clicked than invited: the agents list's small funnel's bars stay inside its 20 px.
    bars = re.search(r'<svg class="mini-funnel".*?</svg>', listed).group(0)
    assert max(float(h) for h in re.findall(r'<rect[^>]* height="([\d.]+)"', bars)) == 18
    assert 'aria-label="Funnel: 3 invited, 4 clicked, 3 started, 2 completed"' in listed
    metrics_page = _text(client.get(f"/metrics?period=custom&from=2026-11-01&to=2026-11-19&agent_id={agent.id}"))
    assert re.search(r'<th scope="row">Clicked</th> <td class="num" data-label="Candidates"><a href="[^"]*">4</a>',
                     metrics_page)
    assert "without an invite (the share link, or a unique link passed on by hand): they enter the funnel at <em>clicked</em>" in metrics_page
    href = re.search(r'href="(/candidates\?metric=link_only&[^"]*)"', metrics_page).group(1)
    people = set(re.findall(r">([IL]\d)</a>", client.get(href.replace("&amp;", "&")).get_data(as_text=True)))
    assert people == {"L1", "L2"}


# --- 4. opt-out spike after a template change --------------------------------------------------

def _spike_data(after_sends: int, after_outs: int, before_sends: int = 30, before_outs: int = 1) -> dict:
    """Reminder e-mails of one template: ``before_sends`` with version 1 (edited on 10 Nov), then
    ``after_sends`` with version 2; the first ``*_outs`` of each were answered by an opt-out."""
    agent = make_agent("Picker")
    template = Template(kind="reminder", channel="email", variant="A", created_at=at("2026-10-01T09:00"))
    v1 = TemplateVersion(number=1, body="Hello", created_at=at("2026-10-01T09:00"))
    v2 = TemplateVersion(number=2, body="HELLO, ACT NOW", created_at=at("2026-11-10T09:00"))
    template.versions += [v1, v2]
    db.session.add(template)
    db.session.flush()
    names = []
    for side, version, sends, outs, day0 in (("b", v1, before_sends, before_outs, 2), ("a", v2, after_sends,
                                                                                     after_outs, 11)):
        for i in range(sends):
            invited = at(f"2026-11-{day0 + i % 7:02d}T08:00")
            c = Candidate(agent_id=agent.id, name=f"{side}{i}", email=f"{side}{i}@example.com", stage="invited",
                          invited_at=invited, created_at=invited, deadline_at=NOW + timedelta(days=5))
            db.session.add(c)
            db.session.flush()
            sent = invited + timedelta(hours=2)
            db.session.add(Message(candidate_id=c.id, kind="reminder", step=1, channel="email", status="sent",
                                   template_version_id=version.id, scheduled_for=sent, sent_at=sent, created_at=sent))
            if i < outs:
                c.stage, c.opted_out_email = "opted_out", True
                db.session.add(Event(candidate_id=c.id, agent_id=agent.id, type="opted_out", channel="email",
                                     at=sent + timedelta(hours=1)))
                if side == "a":
                    names.append(c.name)
    db.session.commit()
    return {"template": template.id, "after_out": names}


def _spike_flags(**over):
    f, _ = definitions.parse(MultiDict({**RANGE, **over}), NOW, "UTC")
    return [fl for fl in services.page(db.session, f)["flags"] if fl.key.startswith("optout_")]


def test_opt_out_spike_after_a_template_change_is_flagged_with_the_template(auth, client, monkeypatch):
    """Defect: the "opt-out spike after a template change" red flag was missing."""
    _clock(monkeypatch, NOW)
    data = _spike_data(after_sends=30, after_outs=3)  # 10 % after against 3 % before
    (flag,) = _spike_flags()
    assert flag.key == "optout_reminder_email" and flag.count == 3
    assert "10 % of 30 messages sent since the change on 2026-11-10" in flag.measured
    assert "3 % of 30 before" in flag.measured
    assert flag.template == {"kind": "reminder", "channel": "email", "variant": "A"}
    body = client.get(f"/metrics?{'&'.join(f'{k}={v}' for k, v in RANGE.items())}").get_data(as_text=True)
    assert 'href="/templates/reminder/email/A"' in body and "Opt-outs rose after the reminder (e-mail) template" in body
    href = re.search(r'href="(/candidates\?metric=optout_spike&[^"]*)"', body).group(1)
    listed = client.get(href.replace("&amp;", "&")).get_data(as_text=True)
    assert set(re.findall(r">([ab]\d+)</a>", listed)) == set(data["after_out"])


def test_no_opt_out_spike_below_twice_the_rate_before(app):
    """The other side of the threshold: 2 of 30 after (6.7 %) is under twice 3 of 30 before (10 %)."""
    _spike_data(after_sends=30, after_outs=2, before_outs=3)
    assert _spike_flags() == []


@pytest.mark.parametrize("row, fires", [
    (dict(before=30, before_out=1, after=30, after_out=3), True),    # 10 % against 3.3 %
    (dict(before=30, before_out=1, after=29, after_out=3), False),   # too few sends after the change
    (dict(before=29, before_out=0, after=30, after_out=3), False),   # too few before to compare with
    (dict(before=100, before_out=2, after=100, after_out=4), True),  # exactly 2× and 4 %
    (dict(before=100, before_out=2, after=100, after_out=3), False),  # 1.5×
    (dict(before=100, before_out=0, after=100, after_out=2), True),  # 2 % from nothing
    (dict(before=100, before_out=0, after=100, after_out=1), False),  # 1 %: under the 2 % floor
])
def test_opt_out_spike_threshold_both_sides(row, fires):
    row = dict(row, before_rate=row["before_out"] / row["before"], after_rate=row["after_out"] / row["after"])
    assert services.is_optout_spike(row) is fires


# --- 5. deliverability by invite date ------------------------------------------------------------

def test_deliverability_counts_the_messages_of_candidates_invited_in_the_range(auth, client, monkeypatch):
    """Defect: deliverability was filtered by the messages' creation date, unlike the rest of the page."""
    _clock(monkeypatch, NOW)
    data = metrics_data.build()
    # P9 was invited in October: its failed reminder of 5 November is not about this range.
    db.session.add(Message(candidate_id=data["P9"], kind="reminder", step=1, channel="email", status="failed",
                           attempts=1, last_error="550 no such user", scheduled_for=at("2026-11-05T10:00"),
                           created_at=at("2026-11-05T10:00")))
    # P12 was invited on 9 November: its reminder of 20 November (after the range) is.
    db.session.add(Message(candidate_id=data["P12"], kind="reminder", step=1, channel="email", status="sent",
                           scheduled_for=at("2026-11-20T10:00"), sent_at=at("2026-11-20T10:00"),
                           created_at=at("2026-11-20T10:00")))
    db.session.commit()
    f, _ = definitions.parse(MultiDict(RANGE), NOW, "UTC")
    delivery = services.page(db.session, f)["delivery"]
    email = next(r for r in delivery["channels"] if r["key"] == "email")
    assert (email["messages"], email["sent"], email["failed"]) == (7, 7, 1)
    assert {r["key"]: r["messages"] for r in delivery["domains"]} == {"example.com": 6, "bounce.example": 1}
    body = client.get("/metrics?" + "&".join(f"{k}={v}" for k, v in RANGE.items())).get_data(as_text=True)
    href = re.search(r'href="(/candidates\?metric=message_failed&amp;metric_dim=channel&amp;metric_value=email[^"]*)"',
                     body).group(1)
    listed = client.get(href.replace("&amp;", "&")).get_data(as_text=True)
    assert set(re.findall(r">(P\d+)</a>", listed)) == {"P4"}

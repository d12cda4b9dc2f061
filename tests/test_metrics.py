"""The Metrics page's figures against a hand-built history whose answers are worked out by
hand here (see tests/metrics_data.py); the same tests run on SQLite and PostgreSQL."""
from __future__ import annotations

import math
import re

import pytest
from werkzeug.datastructures import MultiDict

from milo_portal.extensions import db
from milo_portal.metrics import definitions, services
from tests import metrics_data
from tests.metrics_data import NOW, RANGE


@pytest.fixture()
def data(app):
    return metrics_data.build()


def figures(**over):
    f, errors = definitions.parse(MultiDict({**RANGE, **over}), NOW, "UTC")
    assert errors == {}
    return f, services.page(db.session, f)


def nearest_rank(values, p):
    """Independent nearest-rank percentile: the ceil(p·n)-th smallest value."""
    ordered = sorted(values)
    return ordered[math.ceil(p * len(ordered)) - 1]


def test_the_funnel_counts_each_stage_reached_and_rates_against_delivered(data):
    f, fig = figures()
    steps = {s.who: s for s in fig["funnel"]["steps"]}
    # Invited in range: P1–P8, P11, P12. P4's invite bounced; opened: clicked ones + P2, P12 (P3's is a machine's).
    assert {k: s.count for k, s in steps.items()} == {
        "invited": 10, "delivered": 9, "opened": 6, "clicked": 4, "started": 3, "completed": 2}
    assert steps["delivered"].step_rate == pytest.approx(9 / 10)
    assert steps["opened"].overall == pytest.approx(6 / 9)
    assert steps["clicked"].step_rate == pytest.approx(4 / 6)
    assert steps["completed"].step_rate == pytest.approx(2 / 3)
    assert steps["completed"].overall == pytest.approx(2 / 9)
    c = fig["funnel"]["counts"]
    assert (c["failed"], c["expired"], c["opted_out"]) == (1, 1, 1)
    assert (c["never_started"], c["not_finished"]) == (6, 1)
    assert (c["opened_not_clicked"], c["clicked_not_started"]) == (2, 1)


def test_machine_opens_and_link_scanner_visits_are_counted_apart(data):
    _, fig = figures()
    c = fig["funnel"]["counts"]
    assert c["machine_opened"] == 1 and c["machine_opened_only"] == 1  # P3: a proxy's open only
    assert c["visited_only"] == 1  # P6: the link fetched, nobody used the page


def test_step_times_are_nearest_rank_median_and_p90(data):
    _, fig = figures()
    steps = {s["key"]: s for s in fig["times"]["steps"]}
    expected = {"invite_click": [7200, 3600, 36000, 86400], "click_start": [300, 600, 1800],
                "start_complete": [1560, 1800], "invite_complete": [9060, 90000]}
    for key, values in expected.items():
        assert steps[key]["n"] == len(values)
        assert steps[key]["median"] == pytest.approx(nearest_rank(values, 0.5), abs=0.01)
        assert steps[key]["p90"] == pytest.approx(nearest_rank(values, 0.9), abs=0.01)
    bars = {b["label"]: b["count"] for b in fig["times"]["histogram"]}
    assert bars["1–6 h"] == 1 and bars["1–2 days"] == 1 and sum(bars.values()) == 2


def test_the_time_to_complete_histogram_leaves_out_people_never_invited(data):
    """Defect: a share-link newcomer who finished in minutes landed in "over 7 days" (no invite time)."""
    agent = db.session.get(metrics_data.Candidate, data["P1"]).agent
    metrics_data._person(agent, "Walkin", stage="completed", clicked="2026-11-10T10:00", started="2026-11-10T10:00",
                         completed="2026-11-10T10:20", source="share_link", created="2026-11-10T10:00")
    db.session.commit()
    f, fig = figures()
    assert fig["funnel"]["counts"]["link_only"] == 1  # the newcomer is on the page...
    bars = {b["label"]: b["count"] for b in fig["times"]["histogram"]}
    assert bars["over 7 days"] == 0 and sum(bars.values()) == 2  # ...but has no time since an invite


def test_per_question_drop_off_names_the_question_where_most_leave(data):
    _, fig = figures()
    rows = {(r["agent"], r["position"]): (r["reached"], r["answered"], r["left"]) for r in fig["questions"]["rows"]}
    assert rows == {("Picker", 1): (2, 2, 0), ("Picker", 2): (2, 1, 1), ("Picker", 3): (1, 1, 0),
                    ("Engineer", 1): (1, 1, 0), ("Engineer", 2): (1, 1, 0)}
    worst = fig["questions"]["worst"]
    assert (worst["agent"], worst["position"]) == ("Picker", 2)
    medians = {(r["agent"], r["position"]): r["median"] for r in fig["questions"]["rows"]}
    assert medians[("Picker", 1)] == pytest.approx(300, abs=0.01)  # P1 300 s, P5 600 s: the 1st of 2
    assert medians[("Engineer", 2)] == pytest.approx(600, abs=0.01)


def test_completion_by_channel_device_source_and_followups(data):
    _, fig = figures()
    by = {name: {r["key"]: r for r in rows} for name, rows in fig["by"].items()}
    email = by["channel"]["email"]
    assert (email["invited"], email["delivered"], email["started"], email["completed"]) == (7, 6, 1, 1)
    assert email["completion"] == pytest.approx(1 / 6)
    assert (by["channel"]["sms"]["delivered"], by["channel"]["sms"]["completed"]) == (2, 0)
    assert by["device"]["mobile"]["started"] == 2 and by["device"]["mobile"]["completed"] == 1
    assert by["device"]["desktop"]["completed"] == 1
    assert by["src"]["linkedin"]["invited"] == 2 and set(by["src"]) == {"linkedin"}
    assert by["agent"][data["agent_a"]]["invited"] == 6 and by["agent"][data["agent_b"]]["invited"] == 4
    assert by["level"]["senior"]["completed"] == 1
    assert {k: v["invited"] for k, v in by["followups"].items()} == {0: 8, 1: 1, 2: 1}
    assert by["followups"][1]["completed"] == 1  # P8 completed after one reminder


def test_heat_map_uses_the_candidates_local_time_across_daylight_saving(data):
    _, fig = figures()
    cells = fig["heat"]["cells"]
    assert cells[0 * 24 + 11]["completed"] == 1  # P1: Monday 11:00 in Berlin
    assert cells[1 * 24 + 4]["invited"] == 1     # P2: Tuesday 04:00 in New York (EST after 1 Nov)
    assert sum(c["invited"] for c in cells.values()) == 10


def test_deliverability_per_channel_and_recipient_domain(data):
    _, fig = figures()
    email = next(r for r in fig["delivery"]["channels"] if r["key"] == "email")
    assert (email["messages"], email["sent"], email["failed"], email["temporary"]) == (6, 6, 1, 1)
    domains = {r["key"]: r for r in fig["delivery"]["domains"]}
    assert (domains["bounce.example"]["messages"], domains["bounce.example"]["failed"]) == (1, 1)
    assert (domains["example.com"]["messages"], domains["example.com"]["failed"]) == (5, 0)


def test_filters_narrow_every_figure(data):
    _, fig = figures(agent_id=str(data["agent_b"]))
    assert [s.count for s in fig["funnel"]["steps"]] == [4, 4, 2, 2, 1, 1]  # P6, P7, P8, P11
    _, fig = figures(channel="sms", level="entry")
    assert [s.count for s in fig["funnel"]["steps"]] == [1, 1, 1, 1, 1, 0]  # P5
    _, fig = figures(src="linkedin")
    assert fig["funnel"]["steps"][0].count == 2


def test_ab_results_on_completion_with_an_independent_test(data):
    _, fig = figures()
    (test,) = fig["ab"]
    a, b = test["variants"]
    assert (a["variant"], a["delivered"], a["completed"]) == ("A", 2, 1)
    assert (b["variant"], b["delivered"], b["completed"]) == ("B", 1, 0)
    assert test["winner"] is None and "not yet significant" in b["comparison"].verdict


def _chi_square_p(n1, x1, n2, x2):
    """The 2×2 chi-square test without continuity correction (equal to the pooled z-test)."""
    table = [[x1, n1 - x1], [x2, n2 - x2]]
    total = n1 + n2
    cols = [x1 + x2, total - x1 - x2]
    chi2 = sum((table[i][j] - (n1, n2)[i] * cols[j] / total) ** 2 / ((n1, n2)[i] * cols[j] / total)
               for i in range(2) for j in range(2))
    return math.erfc(math.sqrt(chi2 / 2))


@pytest.mark.parametrize("n1, x1, n2, x2", [(1000, 300, 1000, 350), (400, 120, 380, 95), (150, 30, 160, 60)])
def test_two_proportion_test_matches_chi_square_and_interval(n1, x1, n2, x2):
    result = services.compare(n1, x1, n2, x2)
    p1, p2 = x1 / n1, x2 / n2
    assert result.p_value == pytest.approx(_chi_square_p(n1, x1, n2, x2), rel=1e-9)
    half = 1.96 * math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    assert result.low == pytest.approx(p2 - p1 - half, abs=1e-4)
    assert result.high == pytest.approx(p2 - p1 + half, abs=1e-4)


def test_textbook_two_proportion_example():
    # 30 % against 35 % of 1,000 each: z = 2.387, p = 0.0170 (two-sided).
    result = services.compare(1000, 300, 1000, 350)
    assert result.p_value == pytest.approx(0.0170, abs=0.0005)
    assert result.winner


def test_a_winner_needs_significance_and_the_minimum_sample():
    assert not services.compare(99, 20, 99, 60).winner  # clearly different, but too few
    assert services.compare(100, 20, 100, 60).winner
    weak = services.compare(500, 150, 500, 160)
    assert not weak.winner and re.search(r"about [\d,]+ more invites needed", weak.verdict)


def test_make_winner_the_only_variant(auth, client, data):
    from milo_portal.messaging.services import ensure_default_templates
    from milo_portal.models import Template

    ensure_default_templates(db.session)
    first = db.session.query(Template).filter_by(kind="invite", channel="email").one()
    second = Template(kind="invite", channel="email", variant="B")
    db.session.add(second)
    db.session.commit()
    assert client.get(f"/metrics/variants/{second.id}/only").status_code == 405
    response = client.post(f"/metrics/variants/{second.id}/only", {"back": "period=90"})
    assert response.status_code == 302 and response.headers["Location"].endswith("/metrics?period=90")
    db.session.expire_all()
    assert (db.session.get(Template, first.id).active, db.session.get(Template, second.id).active) == (False, True)


def test_agent_funnels_count_all_time_with_the_page_definitions(data):
    """The agents list's funnels: every invite of all time; a bounced invite is not delivered."""
    funnels = services.agent_funnels(db.session, [data["agent_a"], data["agent_b"]])
    # Picker: P1–P5, P9, P12 invited; P4's invite bounced; clicked and started P1, P5, P9; completed P1, P9.
    assert {k: v for k, v in funnels[data["agent_a"]].items() if k != "completion"} == {
        "invited": 7, "delivered": 6, "link_only": 0, "clicked": 3, "started": 3, "completed": 2, "reached": 6}
    assert funnels[data["agent_a"]]["completion"] == pytest.approx(2 / 6)
    # Engineer: P6, P7, P8, P11 invited; clicked P7, P8; started and completed P8.
    assert {k: v for k, v in funnels[data["agent_b"]].items() if k != "completion"} == {
        "invited": 4, "delivered": 4, "link_only": 0, "clicked": 2, "started": 1, "completed": 1, "reached": 4}

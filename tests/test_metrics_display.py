"""What the Metrics page shows people, from a fresh-clone trial: percentages with their sign,
stored values (share_link, email, senior…) as labels everywhere, filter fields that fit their
options, a heat map readable on a phone, and a deliverability chart whose labels never meet."""
from __future__ import annotations

import csv
import html
import io
import re

import pytest

from milo_portal.extensions import db
from milo_portal.metrics.services import WEEKDAYS
from tests import metrics_data
from tests.metrics_data import NOW

QS = "period=custom&from=2026-11-01&to=2026-11-19"
RAW = ("share_link", "whatsapp", "manual", "email", "sms")


@pytest.fixture()
def data(app, monkeypatch):
    monkeypatch.setattr("milo_portal.metrics.views.now", lambda: NOW)
    return metrics_data.build()


def _section(body: str, element_id: str) -> str:
    start = body.index(f'id="{element_id}"')
    return body[start:body.index("</section>", start)]


def _chart(body: str, chart_id: str) -> str:
    return re.search(r'<svg[^>]* id="' + chart_id + r'".*?</svg>', body, re.S).group(0)


def _texts(svg: str) -> list[str]:
    # (a shortened label carries its whole text in a <title> first)
    return [html.unescape(t).strip() for t in re.findall(r"<text[^>]*>(?:<title>[^<]*</title>)?([^<]*)</text>", svg)]


def test_completion_rate_bars_show_their_numbers_as_percentages(auth, client, data):
    """Defect: the completion-rate bar charts printed "50" for 50 %, beside a table that said "50 %"."""
    body = client.get(f"/metrics?{QS}").get_data(as_text=True)
    for name in ("source", "channel", "device", "agent", "level", "followups", "src"):
        texts = _texts(_chart(body, f"by-{name}-chart"))
        values = texts[1::2]  # label, value, label, value…
        assert values and all(re.fullmatch(r"\d{1,3} %", v) for v in values), (name, values)
    # The table beside it too; the funnel's bars are counts and stay bare numbers.
    assert '<td class="num" data-label="Completion">50 %</td>' in _section(body, "completion-by")
    assert all(re.fullmatch(r"\d+", v) for v in _texts(_chart(body, "funnel-chart"))[1::2])


def test_the_metrics_page_shows_labels_not_stored_values(auth, client, data):
    """Defect: filter options, by-table rows, deliverability and A/B headings showed "share_link",
    "manual", "email", "sms", "whatsapp" as stored."""
    body = client.get(f"/metrics?{QS}").get_data(as_text=True)
    start = body.index('<form class="metrics-filters"')
    form = body[start:body.index("</form>", start)]
    assert '<option value="share_link">Share link</option>' in form
    assert '<option value="manual">Added manually</option>' in form
    assert '<option value="bulk">Bulk upload</option>' in form
    assert '<option value="email">E-mail</option>' in form and '<option value="whatsapp">WhatsApp</option>' in form
    assert '<option value="senior">Senior</option>' in form
    by = _section(body, "completion-by")
    for label in ("Share link", "Added manually", "E-mail", "SMS", "WhatsApp"):
        assert f'<th scope="row">{label}</th>' in by, label
    assert {"Share link", "Added manually"} <= set(_texts(_chart(body, "by-source-chart"))[0::2])
    assert {"E-mail", "SMS", "WhatsApp"} <= set(_texts(_chart(body, "by-channel-chart"))[0::2])
    delivery = _section(body, "deliverability")
    assert '<th scope="row" class="wrap-text">E-mail</th>' in delivery
    assert "<h3>E-mail invite</h3>" in _section(body, "ab")
    # No stored value is shown as text anywhere in the figures (links and values may carry them).
    shown = re.sub(r"<[^>]+>", " ", body[body.index('<div id="metrics-figures"'):])
    for raw in RAW:
        assert not re.search(r"(?<![\w.@-])" + raw + r"(?![\w.@-])", shown), raw


def test_metrics_csv_label_columns_use_the_same_labels(auth, client, data):
    """Defect: the by-source and by-channel CSVs named their rows "share_link", "email"…"""
    def rows(table):
        return list(csv.reader(io.StringIO(client.get(f"/metrics/{table}.csv?{QS}").get_data(as_text=True))))

    assert {"Share link", "Added manually"} <= {r[0] for r in rows("by-source")[1:]}
    assert {"E-mail", "SMS", "WhatsApp"} <= {r[0] for r in rows("by-channel")[1:]}
    assert {r[0] for r in rows("channels")[1:]} == {"E-mail"}
    assert {r[0] for r in rows("ab")[1:]} == {"E-mail"}
    for table in ("by-source", "by-channel", "channels", "ab"):
        assert not {r[0] for r in rows(table)[1:]} & set(RAW), table


def test_the_drill_down_note_names_the_dimension_and_its_label(auth, client, data):
    """Defect: the candidates list's note said "· source share_link" and "· channel whatsapp"."""
    body = client.get(f"/metrics?{QS}").get_data(as_text=True)
    for dim, value, shown in (("source", "share_link", "Source: Share link"), ("channel", "whatsapp", "Channel: WhatsApp"),
                              ("device", "mobile", "Device: phone"), ("heat", "10", "Weekday × hour: Monday 10:00")):
        href = re.search(r'href="(/candidates\?metric=(?:invited|delivered|completed|started)&amp;metric_dim=' + dim
                         + r'&amp;metric_value=' + value + r'&amp;[^"]*)"', body)
        url = href.group(1) if href else (f"/candidates?metric=invited&metric_dim={dim}&metric_value={value}"
                                          "&since=2026-11-01T00:00:00%2B00:00&until=2026-11-20T00:00:00%2B00:00")
        note = client.get(html.unescape(url)).get_data(as_text=True)
        note = note[note.index('class="drill-note"'):]
        note = note[:note.index("</p>")]
        assert shown in html.unescape(note), (dim, note)
        assert f" {value} " not in note


def test_the_heat_map_has_a_tall_version_for_phones_with_every_hour_labelled(auth, client, data):
    """Defect: on a 390 px phone the 24-column heat map shrank its labels to about 6 px. The tall
    version (hours down, weekdays across) has 7 columns; the table of numbers stays."""
    body = client.get(f"/metrics?{QS}").get_data(as_text=True)
    tall = _chart(body, "heat-chart-tall")
    assert 'role="img"' in tall and 'class="chart heat-tall"' in tall
    width = float(re.search(r'viewBox="0 0 ([\d.]+) ', tall).group(1))
    assert width <= 390  # drawn at about its own size on a phone: 13 px labels stay ~13 px
    texts = _texts(tall)
    assert texts[:7] == ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    assert texts[7:] == [f"{h:02d}:00" for h in range(24)]
    assert tall.count("<rect") == 7 * 24
    assert 'class="chart heat-wide"' in _chart(body, "heat-chart")
    assert "The heat map's numbers" in body and '<table class="dense stack" aria-labelledby="heat-h">' in body


def test_long_chart_labels_are_shortened_to_fit_and_the_tallest_bars_number_stays_inside(auth, client, data):
    """Defect (trial): "Customer support specialist" ran past the chart's left edge, and the
    histogram's tallest bar put its number above the top of the chart."""
    from milo_portal.models import Agent

    agent = db.session.get(Agent, data["agent_b"])
    agent.title = "Customer support specialist, nights"
    db.session.commit()
    body = client.get(f"/metrics?{QS}").get_data(as_text=True)
    chart = _chart(body, "by-agent-chart")
    assert "<title>Customer support specialist, nights</title>Customer support spe…" in html.unescape(chart)
    histogram = _chart(body, "histogram-chart")
    value_ys = [float(y) for y in re.findall(r'<text x="[^"]+" y="([^"]+)" text-anchor="middle" font-size="12"',
                                              histogram)]
    assert value_ys and min(value_ys) >= 14  # a 12 px number's baseline, fully inside the chart


def test_chart_numbers_have_thousands_separators_like_their_tables(app):
    """Defect (review): the charts printed 12345 beside a table that said 12,345."""
    with app.test_request_context():
        charts = app.jinja_env.get_template("metrics/_charts.html").module
        funnel = str(charts.hbars("f", "Funnel", [("Invited", 12345, 12345), ("Completed", 987, 12345)]))
        rates = str(charts.hbars("r", "Rates", [("E-mail", 42.5, 100)], unit=" %"))
        bars = str(charts.vbars("h", "Histogram", [("< 1 h", 1500), ("1–4 h", 20)]))
        delivery = str(charts.delivery("d", "Delivery", [("E-mail", 1234567, 1200)]))
    assert _texts(funnel)[1::2] == ["12,345", "987"]
    assert _texts(rates)[1] == "42.5 %"
    assert _texts(bars)[0::2] == ["1,500", "20"]
    assert "1,234,567" in _texts(delivery) and "1,200" in _texts(delivery)
    # The heat map's cells say theirs in their tooltips, in both layouts.
    with app.test_request_context():
        from milo_portal.metrics.views import heat_cells
        drawn = heat_cells({9: {"invited": 18936, "completed": 7768, "completion": 0.41},
                            10: {"invited": 3, "completed": 0, "completion": None}}, WEEKDAYS)
        wide, tall = str(charts.heat("w", "Heat", drawn, WEEKDAYS)), str(charts.heat("t", "Heat", drawn, WEEKDAYS, tall=True))
    for svg in (wide, tall):
        tips = re.findall(r"<rect [^>]*><title>([^<]*)</title></rect>", svg)
        assert len(tips) == 168
        assert "Monday 09:00 — 18,936 invited, 7,768 completed" in [html.unescape(t) for t in tips]
        assert re.search(r'<rect [^>]*fill="#1d4ed8" fill-opacity="0.47"><title>Monday 09:00', svg)
        # No invites, or invites without a rate: drawn grey.
        assert re.search(r'<rect [^>]*fill="#f3f4f6" fill-opacity="1"><title>Monday 10:00 — 3 invited', svg)
        assert re.search(r'<rect [^>]*fill="#f3f4f6" fill-opacity="1"><title>Sunday 23:00 — no invites', svg)
    # The wide map draws Monday 09:00 tenth across the first row; the tall one, tenth down the first column.
    assert re.search(r'<rect x="306" y="20" [^>]*><title>Monday 09:00', wide)
    assert re.search(r'<rect x="50" y="204" [^>]*><title>Monday 09:00', tall)
    # The delivery chart keeps room on its right for the widest number as printed.
    widths = [float(w) for w in re.findall(r'<rect [^>]*width="([\d.]+)"', delivery)]
    assert max(widths) <= 520 - 110 - 50 - (len("1,234,567") + 2) * 8 - 6 + 0.1

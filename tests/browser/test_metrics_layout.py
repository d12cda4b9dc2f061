"""The Metrics page's layout in Chromium at 1366 px and at a 390 px phone width, from a
fresh-clone trial: filter fields show their whole option, the heat map's labels stay readable
on a phone, and the deliverability chart's labels and bars never overlap, small or large counts."""
from __future__ import annotations

import pytest

from milo_portal.extensions import db
from tests import metrics_data
from tests.browser.conftest import login
from tests.conftest import PASSWORD, make_user

pytestmark = pytest.mark.browser

RANGE = "period=custom&from=2026-11-01&to=2026-11-19"
WIDTHS = (1366, 390)

# For each select of the filter form: the widest option's text (in the select's own font)
# against the room inside the select (its width less the padding that holds the arrow).
CLIPPED_SELECTS = """() => [...document.querySelectorAll('.metrics-filters select')].map(s => {
  const st = getComputedStyle(s), ctx = document.createElement('canvas').getContext('2d');
  ctx.font = `${st.fontWeight} ${st.fontSize} ${st.fontFamily}`;
  const widest = Math.max(...[...s.options].map(o => ctx.measureText(o.text).width));
  const room = s.clientWidth - parseFloat(st.paddingLeft) - parseFloat(st.paddingRight);
  return {name: s.name, widest: Math.round(widest), room: Math.round(room)};
}).filter(x => x.name !== 'agent_id' && x.widest > x.room)"""

# Every pair of an SVG's texts and bars (their boxes on screen) that overlap by more than 0.5 px.
OVERLAPS = """(sel) => {
  const boxes = [...document.querySelectorAll(sel + ' text, ' + sel + ' rect')]
    .map(e => ({e, r: e.getBoundingClientRect()})).filter(b => b.r.width > 0 && b.r.height > 0);
  const svg = document.querySelector(sel).getBoundingClientRect(), out = [];
  for (const b of boxes) {
    if (b.r.left < svg.left - 0.5 || b.r.right > svg.right + 0.5) out.push(['outside', b.e.textContent]);
  }
  for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
    const a = boxes[i].r, b = boxes[j].r;
    const dx = Math.min(a.right, b.right) - Math.max(a.left, b.left);
    const dy = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
    if (dx > 0.5 && dy > 0.5) out.push([boxes[i].e.textContent || 'bar', boxes[j].e.textContent || 'bar']);
  }
  return out;
}"""


def _metrics_at_each_width(browser, live_server, path):
    """The dataset's Metrics page at ``path``, logged in, at each width: yields (width, page)."""
    make_user("rita@example.com", "Rita Recruiter")
    metrics_data.build()
    db.session.remove()
    for width in WIDTHS:
        context = browser.new_context(viewport={"width": width, "height": 900})
        page = context.new_page()
        page.set_default_timeout(15_000)
        try:
            login(page, live_server, "rita@example.com", PASSWORD)
            page.goto(live_server.url(path))
            yield width, page
        finally:
            context.close()


def test_filter_selects_show_their_whole_options_at_desktop_and_phone_widths(live_server, browser):
    """Defect: "the last 90 days" was cut off in the "Invited in" select (10rem fields)."""
    for width, page in _metrics_at_each_width(browser, live_server, "/metrics?period=90"):
        assert page.evaluate(CLIPPED_SELECTS) == [], width
        period = page.locator("select[name=period]").bounding_box()
        assert period["x"] >= 0 and period["x"] + period["width"] <= width, width


def test_heat_map_labels_are_readable_on_a_phone(live_server, browser):
    """Defect: at 390 px the 24-column heat map drew its labels at about 6 px."""
    for width, page in _metrics_at_each_width(browser, live_server, f"/metrics?{RANGE}"):
        shown = "#heat-chart-tall" if width < 640 else "#heat-chart"
        hidden = "#heat-chart" if width < 640 else "#heat-chart-tall"
        assert page.locator(shown).is_visible() and not page.locator(hidden).is_visible()
        smallest = page.evaluate("""(sel) => Math.min(...[...document.querySelectorAll(sel + ' text')]
            .map(t => t.getBoundingClientRect().height))""", shown)
        assert smallest >= 13, (width, smallest)  # a 12 px font's line box is ~14 px
        assert page.evaluate("document.scrollingElement.scrollWidth") <= width


@pytest.mark.parametrize("counts", [[(0, 0), (1, 0), (2, 1)], [(1_234_567, 89_012), (3, 999_999), (0, 12)]],
                         ids=["small", "large"])
def test_deliverability_chart_labels_and_bars_never_overlap(app, browser, counts):
    """Defect: the deliverability chart's "sent" and "failed" labels and bars ran over each other."""
    with app.test_request_context():
        macro = app.jinja_env.get_template("metrics/_charts.html").module.delivery
        rows = [(label, sent, failed) for label, (sent, failed) in zip(("E-mail", "SMS", "WhatsApp"), counts)]
        svg = str(macro("channels-chart", "Messages sent and failed", rows))
    for width in WIDTHS:
        context = browser.new_context(viewport={"width": width, "height": 900})
        page = context.new_page()
        try:
            page.set_content(f"<!doctype html><body style='margin:0'><div style='width:{min(width, 560)}px'>{svg}</div>")
            page.locator("#channels-chart").wait_for()
            assert page.evaluate(OVERLAPS, "#channels-chart") == [], (width, counts)
            texts = page.locator("#channels-chart text").all_text_contents()
            assert [t for t in texts if t in ("sent", "failed")] == ["sent", "failed"] * 3
        finally:
            context.close()


def test_the_metrics_page_draws_the_deliverability_chart_without_overlaps(live_server, browser):
    """The chart on the page itself, at both widths, with the dataset's small counts."""
    for width, page in _metrics_at_each_width(browser, live_server, f"/metrics?{RANGE}"):
        page.locator("#channels-chart").scroll_into_view_if_needed()
        assert page.evaluate(OVERLAPS, "#channels-chart") == [], width

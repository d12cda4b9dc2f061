"""Admin pages whose areas are not built yet; each says so plainly."""
from flask import Blueprint, render_template

bp = Blueprint("pages", __name__)

COMING = {
    "metrics": ("Metrics", "The funnel from invited to completed, with red flags"),
}


def _coming(area: str):
    title, what = COMING[area]
    return render_template("pages/coming.html", title=title, what=what)


for _area in COMING:
    bp.add_url_rule(f"/{_area}", _area, lambda _a=_area: _coming(_a))

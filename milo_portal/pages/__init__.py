"""Admin pages whose areas are not built yet; each says so plainly."""
from flask import Blueprint, render_template

bp = Blueprint("pages", __name__)

# Every area is built; an area that is not yet would be listed here as
# "name": ("Title", "what it will do").
COMING: dict[str, tuple[str, str]] = {}


def _coming(area: str):
    title, what = COMING[area]
    return render_template("pages/coming.html", title=title, what=what)


for _area in COMING:
    bp.add_url_rule(f"/{_area}", _area, lambda _a=_area: _coming(_a))

from flask import render_template

from ..db import get_db
from . import bp
from .service import list_plans


@bp.route("/")
def index():
    """The plans on sale, with their words and prices."""
    return render_template("plans/index.html", plans=list_plans(get_db()))

from flask import render_template

from ..db import get_db
from . import bp
from .service import list_plans


@bp.route("/")
def index():
    return render_template("plans/index.html", plans=list_plans(get_db()))

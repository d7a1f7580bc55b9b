"""The shop's own pages: who sells the words (merchant details), terms and refund policy.

The merchant details reach every page (footer, receipts) through one context value,
and an operator may replace the pages' text with templates of their own under
SITE_TEMPLATES_DIR (only the `site/` templates: the payment pages stay as shipped).
"""
from flask import Blueprint

bp = Blueprint("site", __name__)


def register_site(app):
    from . import views  # noqa: F401
    from .merchant import merchant_from
    from .overrides import with_operator_templates
    from ..plans.intent import plan_from_next

    app.register_blueprint(bp)
    merchant = merchant_from(app.config)
    app.context_processor(lambda: {"merchant": merchant})
    app.add_template_global(plan_from_next, "plan_from_next")
    with_operator_templates(app, app.config.get("SITE_TEMPLATES_DIR") or "")

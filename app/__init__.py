"""Lipia: prepaid word credits paid with M-Pesa STK push."""
from __future__ import annotations

from typing import Any, Mapping

from dotenv import load_dotenv
from flask import Flask

from .config import flask_settings, load_config


def create_app(overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Flask:
    """Build the web app; raises ConfigError listing every bad setting."""
    if environ is None:
        load_dotenv()
    config = load_config(environ, overrides, announce=False)
    app = Flask(__name__, instance_relative_config=True)
    app.config.update(config)
    app.config.update(flask_settings(config))
    app.config.update({k: v for k, v in (overrides or {}).items()})

    from .logs import register_logging
    from .db import register_db
    from .extensions import register_extensions
    from .security import register_security
    from .errors import register_errors
    from .auth import register_auth
    from .plans import register_plans
    from .payments import register_payments
    from .c2b import register_c2b
    from .credits import register_credits
    from .api import register_api
    from .admin import register_admin
    from .ops import register_ops
    from .notices import register_notices
    from .cli import register_cli
    from .templating import register_templating
    from .assets import register_static
    from .site import register_site
    from .i18n import register_i18n

    register_logging(app)
    register_i18n(app)
    register_db(app)
    register_extensions(app)
    register_security(app)
    register_errors(app)
    register_auth(app)
    register_plans(app)
    register_payments(app)
    register_c2b(app)
    register_credits(app)
    register_api(app)
    register_admin(app)
    register_ops(app)
    register_notices(app)
    register_cli(app)
    register_templating(app)
    register_static(app)
    register_site(app)

    from .logs import learn_secret_routes
    # Every route is known now: their secret segments are masked in every log line from here on.
    learn_secret_routes(app.url_map.iter_rules())
    return app

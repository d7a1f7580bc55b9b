"""Flask extensions, created unbound and initialised in `create_app`."""
from flask_bcrypt import Bcrypt
from flask_bootstrap import Bootstrap5
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect

bcrypt = Bcrypt()
csrf = CSRFProtect()
bootstrap = Bootstrap5()
login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = "Please log in to continue."
login_manager.login_message_category = "info"
# Limits are keyed per address by default; login adds a per-account key of its own.
limiter = Limiter(key_func=get_remote_address, default_limits=[], headers_enabled=True)


def register_extensions(app):
    from .db import database_for
    from .users import get_by_id

    bcrypt.init_app(app)
    csrf.init_app(app)
    bootstrap.init_app(app)
    login_manager.init_app(app)

    storage = app.config.get("RATELIMIT_STORAGE_URI") or app.config["MONGO_URI"]
    if storage.startswith("mongomock://"):
        storage = "memory://"
    app.config["RATELIMIT_STORAGE_URI"] = storage
    if storage.startswith("mongodb"):
        # One database for everything: managed MongoDB users are often limited to one.
        app.config["RATELIMIT_STORAGE_OPTIONS"] = {
            "database_name": database_for(app.config["MONGO_URI"]).name,
            "counter_collection_name": "ratelimit_counters",
            "window_collection_name": "ratelimit_windows",
        }
    limiter.init_app(app)

    @login_manager.user_loader
    def load_user(user_id):
        return get_by_id(database_for(app.config["MONGO_URI"]), user_id)

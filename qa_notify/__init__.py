"""qa_notify: a Q&A site whose users are told, live and reliably, when something they follow happens."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from flask import Flask

from config import DEFAULT_SECRET_KEY, INSTANCE_DIR, config_for, database_url

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger(__name__)


def create_app(config: dict | str | None = None) -> Flask:
    """Build the Flask app. ``config`` is an environment name or a dict of overrides."""
    app = Flask(__name__, template_folder=str(ROOT / "templates"), instance_path=str(INSTANCE_DIR))
    load_config(app, config)
    trust_proxies(app)
    register_request_logging(app)
    register_extensions(app)
    register_blueprints(app)
    register_rate_limits(app)
    register_errorhandlers(app)
    register_input_guards(app)
    register_security_headers(app)
    register_stream_admission(app)
    register_commands(app)
    return app


def load_config(app: Flask, config: dict | str | None) -> None:
    """Apply the environment's settings class, then any overrides; refuse unsafe production."""
    overrides = config if isinstance(config, dict) else {}
    env_name = config if isinstance(config, str) else overrides.get("ENV_NAME")
    app.config.from_object(config_for(env_name))
    for name in ("SECRET_KEY", "REDIS_URL", "CELERY_BROKER_URL", "CELERY_TASK_QUEUE"):
        if os.environ.get(name):
            app.config[name] = os.environ[name]
    if os.environ.get("DATABASE_URL"):
        app.config["SQLALCHEMY_DATABASE_URI"] = database_url(os.environ["DATABASE_URL"])
    app.config.update(overrides)
    make_private_dir(Path(app.instance_path))
    if app.config["ENV_NAME"] == "production" and app.config["SECRET_KEY"] in (
        None,
        "",
        DEFAULT_SECRET_KEY,
    ):
        raise RuntimeError("production needs SECRET_KEY set to a long random value")
    if not app.config["REDIS_URL"]:
        app.config["REDIS_URL"] = _embedded_redis_url(app)


def trust_proxies(app: Flask) -> None:
    """Behind ``PROXY_COUNT`` proxies (nginx: 1), take the client's address and scheme from
    their ``X-Forwarded-For`` / ``-Proto``: rate limits count per client, not per proxy."""
    count = app.config["PROXY_COUNT"]
    if count:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=count, x_proto=count)


def register_request_logging(app: Flask) -> None:
    """Give each request an id (``X-Request-ID``) and one access line (see ``logs``)."""
    from .logs import init_request_logging

    init_request_logging(app)


def make_private_dir(path: Path) -> None:
    """Create ``path`` readable by its owner only (it holds the database of password hashes)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)


def _embedded_redis_url(app: Flask) -> str | None:
    """Return the URL of the server ``manage.py run`` started, if one is running."""
    url_file = Path(app.instance_path) / "redis.url"
    return url_file.read_text().strip() if url_file.exists() else None


def register_extensions(app: Flask) -> None:
    """Bind the database, migrations, login, CSRF, Redis, Celery and mail to ``app``."""
    from workers import celery_init_app

    from .events.bus import connect_redis
    from .events.outbox import register_outbox_hooks
    from .extensions import babel, csrf, db, login_manager, migrate
    from .i18n import page_lang, role_name, select_locale, type_name
    from .mail import init_mail

    sqlite = app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite")
    if sqlite:
        # A connection to a local file cannot drop: the pre-ping would be one more statement
        # on every checkout (every request, every drain round) for nothing.
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {**app.config["SQLALCHEMY_ENGINE_OPTIONS"], "pool_pre_ping": False}
    db.init_app(app)
    if sqlite:
        from sqlalchemy import event

        from .extensions import tune_sqlite

        with app.app_context():
            event.listen(db.engine, "connect", tune_sqlite)
    migrate.init_app(app, db, directory=str(ROOT / "migrations"))
    login_manager.init_app(app)
    csrf.init_app(app)
    babel.init_app(app, locale_selector=select_locale)
    app.add_template_global(page_lang)
    app.add_template_global(role_name)
    app.add_template_global(type_name)
    app.extensions["qa_redis"] = None
    if app.config["REDIS_URL"]:
        connect_redis(app)  # a cluster that is down or forming is retried on first use
    if not app.config["REDIS_URL"]:
        log.info("no REDIS_URL and no embedded Redis running: events wait in the outbox")
        app.config["CELERY_BROKER_URL"] = app.config["CELERY_BROKER_URL"] or "memory://"
    celery_init_app(app)
    register_outbox_hooks()
    init_mail(app)


def register_blueprints(app: Flask) -> None:
    """Mount the site's parts: auth, Q&A, the inbox, live stream, preferences, admin, email, health."""
    from .urls import IdConverter

    app.url_map.converters["id"] = IdConverter
    from .admin import bp as admin_bp
    from .auth import bp as auth_bp
    from .health import bp as health_bp
    from .live import bp as live_bp
    from .mail import bp as mail_bp
    from .notifications import bp as notifications_bp
    from .preferences import bp as preferences_bp
    from .push import bp as push_bp
    from .qa import bp as qa_bp

    for blueprint in (auth_bp, qa_bp, notifications_bp, live_bp, preferences_bp, admin_bp, mail_bp, health_bp, push_bp):
        app.register_blueprint(blueprint)


def register_rate_limits(app: Flask) -> None:
    """Limit logins, sign-ups and posting (policy in ``ratelimits``)."""
    from .ratelimits import apply_rate_limits

    apply_rate_limits(app)


def register_errorhandlers(app: Flask) -> None:
    """Answer errors as JSON on the API and as a page elsewhere; never a stack trace."""
    from .errors import register

    register(app)


def register_input_guards(app: Flask) -> None:
    """Refuse NUL characters in query strings and forms (PostgreSQL cannot store them)."""
    from flask import abort, request

    @app.before_request
    def refuse_nul_characters():
        for values in (request.args, request.form):
            for key, value in values.items(multi=True):
                if "\x00" in key or "\x00" in value:
                    abort(400, "NUL characters are not allowed in requests")


def register_security_headers(app: Flask) -> None:
    """Send a strict Content-Security-Policy (no inline script) and friends on every response."""
    csp = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
    )

    @app.after_request
    def add_headers(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        if response.mimetype == "text/event-stream":
            return response  # not a document: the page headers would only cost every open stream memory
        response.headers.setdefault("Content-Security-Policy", csp)
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        return response


def register_stream_admission(app: Flask) -> None:
    """Refuse new streams cheaply while the process drains (outermost middleware)."""
    from .live.admission import register_stream_admission as register

    register(app)


def register_commands(app: Flask) -> None:
    """Add the management commands (init-db, create-user, seed-demo, notify, broadcast)."""
    from .commands import register

    register(app)

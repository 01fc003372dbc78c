"""Flask extensions, created unbound and bound to the app in ``create_app``."""

import os

from flask_babel import Babel
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_mailman import Mail
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    """Declarative base for every model."""


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()
mail = Mail()
babel = Babel()
limiter = Limiter(key_func=get_remote_address, default_limits=[])


def tune_sqlite(dbapi_connection, _record) -> None:
    """SQLite as a server-ish database: WAL (readers never block the writer), commits without
    an fsync each (NORMAL is durable across app crashes, not power loss), and waiting, not
    failing, when another process holds the write lock."""
    cursor = dbapi_connection.cursor()
    _make_files_private(cursor)
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _make_files_private(cursor) -> None:
    """Make the database file and its WAL companions owner-only: they hold password hashes."""
    for _, _, path in cursor.execute("PRAGMA database_list").fetchall():
        for name in (path, f"{path}-wal", f"{path}-shm") if path else ():
            if os.path.exists(name):
                os.chmod(name, 0o600)

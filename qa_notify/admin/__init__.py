"""Admin tools: broadcasts and role management."""

from flask import Blueprint

bp = Blueprint("admin", __name__)

from . import api, views  # noqa: E402, F401  (routes register themselves on bp)

"""Admin tools: broadcasts, role management and failed deliveries."""

from flask import Blueprint

bp = Blueprint("admin", __name__)

from . import api, deliveries, live, views  # noqa: E402, F401  (routes register themselves on bp)

"""What a user was told: the inbox, preferences, and the live ``/notifications`` stream."""

from flask import Blueprint

bp = Blueprint("notifications", __name__)

from . import api, health, stream, views  # noqa: E402, F401  (routes register themselves on bp)

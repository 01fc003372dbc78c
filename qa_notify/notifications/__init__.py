"""What a user was told: the inbox and preferences (the live stream is ``qa_notify.live``)."""

from flask import Blueprint

bp = Blueprint("notifications", __name__)

from . import api, health, views  # noqa: E402, F401  (routes register themselves on bp)

"""What each user chose to be told and how: muted event types and email settings, page and API.

It sits above the inbox (``notifications``) and ``mail`` and imports both, so neither of
them imports the other's settings.
"""

from flask import Blueprint

bp = Blueprint("preferences", __name__)

from . import api, quiet_api, views  # noqa: E402, F401  (routes register themselves on bp)

"""The inbox: what a user was told, as rows, groups and wording, its JSON API and its page (the live stream is ``qa_notify.live``, preferences ``qa_notify.preferences``)."""

from flask import Blueprint

bp = Blueprint("notifications", __name__)

from . import api, views  # noqa: E402, F401  (routes register themselves on bp)

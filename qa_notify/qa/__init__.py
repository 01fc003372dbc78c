"""The Q&A site: questions, answers, topics and follows, as pages and as JSON."""

from flask import Blueprint

bp = Blueprint("qa", __name__)

from . import api, views, watch_views  # noqa: E402, F401  (routes register themselves on bp)

"""Accounts: register, log in, log out, as pages and as JSON."""

from flask import Blueprint

bp = Blueprint("auth", __name__)

from . import api, password, views  # noqa: E402, F401  (routes register themselves on bp)

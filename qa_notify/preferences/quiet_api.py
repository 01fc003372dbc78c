"""JSON endpoints for quiet hours, snooze and the time zone (the rule itself is ``qa_notify.quiet``).

``GET``/``PUT /api/preferences/quiet`` and ``POST``/``DELETE /api/preferences/snooze``; each
answers with the user's quiet state, ``{quiet, until, next_from, snoozed_until, time_zone,
time_zone_set, quiet_start, quiet_end}``, which is also what the page acts on.
"""

from __future__ import annotations

import logging

from flask import jsonify
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy.exc import SQLAlchemyError

from .. import quiet
from ..extensions import db
from ..jsonapi import APIError, api_login_required, json_body
from . import bp

log = logging.getLogger(__name__)
QUIET_FIELDS = {"time_zone", "quiet_start", "quiet_end"}


@bp.app_context_processor
def inject_quiet_state() -> dict:
    """Give every page the user's quiet state, so it knows before its first event (js/quiet.js)."""
    if not current_user.is_authenticated:
        return {}
    try:
        return {"quiet_state": quiet.quiet_state(current_user)}
    except SQLAlchemyError:  # the error page must still render when the database is what failed
        db.session.rollback()
        log.warning("quiet state unavailable", exc_info=True)
        return {}


@bp.get("/api/preferences/quiet")
@api_login_required
def api_quiet():
    """Return the user's quiet hours, snooze, time zone, and whether they are quiet now and until when."""
    return jsonify(quiet.quiet_state(current_user))


@bp.put("/api/preferences/quiet")
@api_login_required
def api_set_quiet():
    """Change the time zone and/or the quiet hours (``quiet_start`` and ``quiet_end`` together)."""
    data = json_body()
    if not QUIET_FIELDS & data.keys():
        raise APIError(422, _("Give 'time_zone', or 'quiet_start' and 'quiet_end'."))
    _refuse_unknown(data, QUIET_FIELDS)
    try:
        user = quiet.set_quiet_preferences(current_user.id, {k: data[k] for k in QUIET_FIELDS & data.keys()})
    except ValueError as exc:
        raise APIError(422, str(exc)) from None
    return jsonify(quiet.quiet_state(user))


@bp.post("/api/preferences/snooze")
@api_login_required
def api_snooze():
    """Snooze notifications: ``{"minutes": 60}`` or ``{"until": "tomorrow"}``."""
    data = json_body()
    _refuse_unknown(data, {"minutes", "until"})
    try:
        user = quiet.snooze(current_user.id, minutes=data.get("minutes"), until=data.get("until"))
    except ValueError as exc:
        raise APIError(422, str(exc)) from None
    return jsonify(quiet.quiet_state(user))


def _refuse_unknown(data: dict, fields) -> None:
    """A 422 naming the first field of ``data`` that is not one of ``fields``."""
    unknown = data.keys() - set(fields)
    if unknown:
        raise APIError(422, _("Unknown field '%(name)s'.", name=sorted(unknown)[0][:40]))


@bp.delete("/api/preferences/snooze")
@api_login_required
def api_stop_snooze():
    """Stop snoozing now (quiet hours still apply)."""
    return jsonify(quiet.quiet_state(quiet.stop_snooze(current_user.id)))

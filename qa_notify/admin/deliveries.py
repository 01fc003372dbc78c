"""Admin view of deliveries that failed too often to be retried automatically.

A poison event (one whose fan-out keeps raising) is set aside after OUTBOX_MAX_FAILURES
tries; it waits here, with its error, until an admin retries it after fixing the cause.
"""

from __future__ import annotations

from flask import flash, jsonify, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_wtf import FlaskForm

from ..events.outbox import failed_events, retry_failed
from ..jsonapi import APIError, page_role_required, role_required
from ..models import OutboxEvent
from . import bp


class RetryForm(FlaskForm):
    """Just the CSRF token: retrying is a state change."""


def failed_to_dict(row: OutboxEvent) -> dict:
    """Return the JSON form of a failed event: what it was, when, and why it failed."""
    return {
        "id": row.id,
        "type": row.event_type,
        "created_at": row.created_at.isoformat() + "Z",
        "failed_at": row.failed_at.isoformat() + "Z",
        "failures": row.failures,
        "last_error": row.last_error,
    }


@bp.get("/admin/deliveries")
@page_role_required("admin")
def deliveries_page():
    """List the events set aside after failing, each with its error and a Retry button."""
    return render_template("admin/deliveries.html", failed=failed_events(), form=RetryForm())


@bp.post("/admin/deliveries/<id:outbox_id>/retry")
@page_role_required("admin")
def retry_delivery_page(outbox_id: int):
    """Give a failed event a fresh set of tries."""
    if not RetryForm().validate_on_submit():
        flash(_("Your form expired; reload the page and try again."), "error")
    elif retry_failed(outbox_id):
        flash(_("Event %(id)s is being delivered again.", id=outbox_id), "success")
    else:
        flash(_("Event %(id)s is not among the failed deliveries.", id=outbox_id), "error")
    return redirect(url_for("admin.deliveries_page"))


@bp.get("/api/admin/deliveries/failed")
@role_required("admin")
def api_failed_deliveries():
    """List the events set aside after failing, newest first."""
    return jsonify(failed=[failed_to_dict(row) for row in failed_events()])


@bp.post("/api/admin/deliveries/<id:outbox_id>/retry")
@role_required("admin")
def api_retry_delivery(outbox_id: int):
    """Give a failed event a fresh set of tries; 404 if it is not a failed one."""
    if not retry_failed(outbox_id):
        raise APIError(404, "no failed delivery with that id")
    return jsonify(retried=outbox_id), 202

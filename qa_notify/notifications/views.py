"""The inbox pages, and the unread count every page's badge shows (preferences: ``qa_notify.preferences``)."""

from __future__ import annotations

import logging

from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from sqlalchemy.exc import SQLAlchemyError
from wtforms import BooleanField, HiddenField

from ..extensions import db
from ..models import valid_id
from ..urls import site_path
from . import bp, wording
from .inbox import list_groups, mark_read, unread_count

log = logging.getLogger(__name__)
PAGE_SIZE = 20
MAX_IDS = 1000


class MarkReadForm(FlaskForm):
    """Mark one notification (``ids``), several (space-separated) or ``all`` read."""

    ids = HiddenField()
    all = BooleanField()
    before = HiddenField()


@bp.app_context_processor
def inject_unread_count() -> dict:
    """Give every template the logged-in user's unread count for the nav badge."""
    if not current_user.is_authenticated:
        return {}
    try:
        return {"unread_count": unread_count(current_user.id), "page_words": wording.page_words()}
    except SQLAlchemyError:
        # The error page must still render when the database is what failed.
        db.session.rollback()
        log.warning("unread count unavailable", exc_info=True)
        return {}


bp.add_app_template_filter(site_path, "site_path")
bp.add_app_template_global(wording.describe, "describe")


def id_arg(raw: str | None) -> int | None:
    """Return ``raw`` as a notification id, or None if it is not a plausible one."""
    if raw is None or not raw.isascii() or not raw.isdigit() or len(raw) > 10:
        return None
    value = int(raw)
    return value if valid_id(value) else None


@bp.get("/inbox")
@login_required
def inbox_page():
    """Show the inbox newest first, ``PAGE_SIZE`` at a time, older pages via ``?before=<id>``."""
    raw_before = request.args.get("before")
    before = id_arg(raw_before)
    if raw_before is not None and before is None:
        flash("That page does not exist; here are your newest notifications.", "error")
    items = list_groups(current_user.id, before, PAGE_SIZE + 1)
    older = items[PAGE_SIZE - 1].id if len(items) > PAGE_SIZE else None
    return render_template(
        "notifications/inbox.html",
        items=items[:PAGE_SIZE],
        before=before,
        older=older,
        form=MarkReadForm(),
    )


@bp.post("/inbox/read")
@login_required
def mark_read_page():
    """Mark the chosen notifications (or all) read, then return to the same inbox page."""
    form = MarkReadForm()
    before = id_arg(form.before.data)
    back = redirect(url_for("notifications.inbox_page", before=before))
    if not form.validate_on_submit():
        flash("Your form expired; reload the page and try again.", "error")
        return back
    if form.all.data:
        mark_read(current_user.id, None)
        flash("All notifications marked read.", "success")
        return back
    ids = [id_arg(part) for part in (form.ids.data or "").split()]
    if not ids or None in ids or len(ids) > MAX_IDS:
        flash("Choose which notifications to mark read.", "error")
        return back
    changed, _ = mark_read(current_user.id, ids)
    noun = "notification" if len(changed) == 1 else "notifications"
    flash(f"Marked {len(changed)} {noun} read.", "success")
    return back

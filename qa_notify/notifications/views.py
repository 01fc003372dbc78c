"""The inbox pages, and the unread count every page's badge shows (preferences: ``qa_notify.preferences``)."""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl, urlencode

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import ngettext
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from sqlalchemy.exc import SQLAlchemyError
from wtforms import BooleanField, HiddenField

from ..events.types import BUILTIN_TYPES
from ..extensions import db
from ..models import valid_id
from ..urls import site_path
from . import bp, wording
from .inbox import list_groups, mark_read, unread_count
from .triage import archive, mark_unread, parse_filter

log = logging.getLogger(__name__)
PAGE_SIZE = 20
MAX_IDS = 1000


class MarkReadForm(FlaskForm):
    """Mark one notification (``ids``), several (space-separated) or ``all`` read."""

    ids = HiddenField()
    all = BooleanField()
    before = HiddenField()
    view = HiddenField()  # the page's filter as a query string, to come back to it


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
    """Show the inbox newest first, ``PAGE_SIZE`` at a time, older pages via ``?before=<id>``,
    filtered by ``?unread=1&type=...&question=<id>&archived=1`` (a bad value: a message, and ignored)."""
    raw_before = request.args.get("before")
    before = id_arg(raw_before)
    if raw_before is not None and before is None:
        flash(_("That page does not exist; here are your newest notifications."), "error")
    found, errors = parse_filter(request.args)
    for error in errors:
        flash(_("Filter ignored: %(reason)s.", reason=error), "error")
    items = list_groups(current_user.id, before, PAGE_SIZE + 1, found.where())
    older = items[PAGE_SIZE - 1].id if len(items) > PAGE_SIZE else None
    return render_template(
        "notifications/inbox.html",
        items=items[:PAGE_SIZE],
        before=before,
        older=older,
        form=MarkReadForm(view=urlencode(found.args())),
        found=found,
        types=BUILTIN_TYPES,
    )


def _back_to_inbox(form: MarkReadForm):
    """Redirect to the inbox page (and filter) the form was sent from."""
    found, _problems = parse_filter(dict(parse_qsl(form.view.data or "")))
    return redirect(url_for("notifications.inbox_page", before=id_arg(form.before.data), **found.args()))


@bp.post("/inbox/<any(unread, archive):action>")
@login_required
def triage_page(action: str):
    """Mark the chosen items unread, or archive them, then return to the same inbox page."""
    form = MarkReadForm()
    back = _back_to_inbox(form)
    if not form.validate_on_submit():
        flash("Your form expired; reload the page and try again.", "error")
        return back
    raw = (form.ids.data or "").split()
    ids = [i for i in map(id_arg, raw) if i is not None]
    if not ids or len(ids) != len(raw) or len(ids) > MAX_IDS:
        flash(_("Choose which notifications to change."), "error")
        return back
    changed, _count = (mark_unread if action == "unread" else archive)(current_user.id, ids)
    if action == "unread":
        done = ngettext("Marked %(num)d notification unread.", "Marked %(num)d notifications unread.", len(changed))
    else:
        done = ngettext("Archived %(num)d notification.", "Archived %(num)d notifications.", len(changed))
    flash(done, "success")
    return back


@bp.post("/inbox/read")
@login_required
def mark_read_page():
    """Mark the chosen notifications (or all) read, then return to the same inbox page."""
    form = MarkReadForm()
    back = _back_to_inbox(form)
    if not form.validate_on_submit():
        flash("Your form expired; reload the page and try again.", "error")
        return back
    if form.all.data:
        mark_read(current_user.id, None)
        flash(_("All notifications marked read."), "success")
        return back
    ids = [id_arg(part) for part in (form.ids.data or "").split()]
    if not ids or None in ids or len(ids) > MAX_IDS:
        flash(_("Choose which notifications to mark read."), "error")
        return back
    changed, _count = mark_read(current_user.id, ids)
    flash(ngettext("Marked %(num)d notification read.", "Marked %(num)d notifications read.", len(changed)), "success")
    return back

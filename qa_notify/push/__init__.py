"""Web Push: notifications that reach a browser with no tab of the site open.

A browser subscribes with the site's VAPID public key (``static/js/push.js``, the service
worker ``/sw.js``) and posts its ``PushSubscription.toJSON()`` here; the subscription is
stored per user and device (``subscriptions``). After each fan-out batch the events layer
hands the batch to ``delivery.enqueue_pushes`` (bound in ``workers`` through
``qa_notify.jobs``): one query finds who among the batch has a device at all, and one task
per event sends to them (``delivery.deliver``), never in the fan-out itself. ``vapid`` holds
the keys, ``payload`` the notification's text, ``sending`` the HTTP call and what each
answer of the push service means.
"""

from flask import Blueprint, session
from flask_login import user_logged_out

bp = Blueprint("push", __name__)

from . import api  # noqa: E402, F401  (routes register themselves on bp)
from .subscriptions import forget_session  # noqa: E402


@user_logged_out.connect
def _unsubscribe_on_sign_out(_app, user=None, **_extra) -> None:
    """Signing out of a browser stops pushes to it: its sign-in's devices are forgotten (a
    shared browser never shows the previous user's pushes). Flask-Login sends this from
    ``logout_user``, before the session is cleared."""
    sid = session.get("sid")
    if user is not None and sid:
        forget_session(user.id, sid)

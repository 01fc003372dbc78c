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

from flask import Blueprint

bp = Blueprint("push", __name__)

from . import api  # noqa: E402, F401  (routes register themselves on bp)

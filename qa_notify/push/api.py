"""Push endpoints: the VAPID public key, a browser's subscription (add, list, remove), and ``/sw.js``.

``POST /api/push/subscriptions`` takes ``PushSubscription.toJSON()`` as the browser gives
it (``{endpoint, expirationTime, keys: {p256dh, auth}}``): 201 for a new device, 200 for
one already known, 422 for one the site will not push to. The service worker is served
from the root (``Service-Worker-Allowed: /``) so its scope is the whole site.
"""

from __future__ import annotations

from flask import current_app, jsonify, request, send_from_directory, session
from flask_login import current_user

from ..jsonapi import APIError, api_login_required, json_body
from . import bp, subscriptions, vapid


@bp.get("/api/push/key")
@api_login_required
def api_push_key():
    """Return the public key browsers subscribe with (``applicationServerKey``)."""
    try:
        key = vapid.public_key()
    except vapid.NoKeys:
        raise APIError(503, "push notifications are not set up on this site (no VAPID key)") from None
    return jsonify(public_key=key)


@bp.post("/api/push/subscriptions")
@api_login_required
def api_add_subscription():
    """Store this browser's push subscription for the signed-in user."""
    data = json_body()
    try:
        parsed = subscriptions.parse(data)
    except subscriptions.InvalidSubscription as exc:
        raise APIError(422, str(exc)) from None
    row, created = subscriptions.save(
        current_user.id, parsed, request.headers.get("User-Agent", ""), session_id=session.get("sid")
    )
    return jsonify(row.to_dict()), 201 if created else 200


@bp.get("/api/push/subscriptions")
@api_login_required
def api_list_subscriptions():
    """List the signed-in user's devices (newest first), without their keys."""
    return jsonify(subscriptions=[row.to_dict() for row in subscriptions.list_for(current_user.id)])


@bp.delete("/api/push/subscriptions/<id:subscription_id>")
@api_login_required
def api_remove_subscription(subscription_id: int):
    """Remove one of the signed-in user's devices: no more pushes to it."""
    if not subscriptions.remove(current_user.id, subscription_id):
        raise APIError(404, "no such device")
    return jsonify(removed=subscription_id)


@bp.get("/sw.js")
def service_worker():
    """Serve the service worker from the site's root, so it may control every page."""
    response = send_from_directory(current_app.static_folder or "static", "js/sw.js", max_age=0)
    response.headers["Service-Worker-Allowed"] = "/"
    response.headers["Cache-Control"] = "no-cache"
    response.mimetype = "text/javascript"
    return response

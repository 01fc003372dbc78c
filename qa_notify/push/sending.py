"""One push to one device: encrypt (aes128gcm), sign (VAPID), POST, and what the answer means.

pywebpush encrypts and posts through the ``requests`` session given to it; ours never
follows a redirect (a push service has no reason to send one, and following it would let
an endpoint steer the server's POST elsewhere) and checks certificates against
``PUSH_CA_BUNDLE`` when set. A 2xx is delivered; 404/410 mean the subscription is gone;
429, 5xx and no connection are worth retrying (after ``Retry-After`` if given); anything
else (a redirect, another 4xx) is refused for good and logged.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import requests
from flask import current_app

from ..models import PushSubscription
from .vapid import b64url, load_vapid

log = logging.getLogger(__name__)
DELIVERED, GONE, RETRY, REFUSED = "delivered", "gone", "retry", "refused"


@dataclass(frozen=True)
class Outcome:
    """What became of one push: DELIVERED, GONE, RETRY (after ``retry_after`` seconds, if known) or REFUSED."""

    status: str
    http_status: int | None = None
    retry_after: float | None = None
    detail: str = ""


class NoRedirectSession(requests.Session):
    """A requests session that never follows a redirect, whatever the caller asks."""

    def request(self, method, url, *args, **kwargs):
        """Send the request with ``allow_redirects`` forced off."""
        kwargs["allow_redirects"] = False
        return super().request(method, url, *args, **kwargs)


def session() -> requests.Session:
    """Return this app's push session (kept, so connections to a push service are reused)."""
    existing = current_app.extensions.get("qa_push_session")
    if existing is None:
        existing = NoRedirectSession()
        existing.trust_env = False  # no proxy or CA bundle from the environment: the settings decide
        existing.verify = current_app.config.get("PUSH_CA_BUNDLE") or True
        existing.max_redirects = 0
        current_app.extensions["qa_push_session"] = existing
    return existing


def topic(group: str) -> str:
    """Return the RFC 8030 ``Topic`` of a group: a push service keeps only the newest per topic."""
    return b64url(hashlib.sha256(group.encode("utf-8")).digest())[:32]


def vapid_headers(endpoint: str) -> dict[str, str]:
    """Return the VAPID ``Authorization`` header for the endpoint's push service (valid 12 hours)."""
    parts = urlsplit(endpoint)
    claims = {
        "sub": current_app.config["VAPID_SUBJECT"],
        "aud": f"{parts.scheme}://{parts.netloc}",
        "exp": int(time.time()) + 12 * 3600,
    }
    return dict(load_vapid().sign(claims))


def send(subscription: PushSubscription, data: bytes, group: str) -> Outcome:
    """POST ``data`` (at most 3,993 bytes) encrypted to ``subscription``; return what happened."""
    # Imported on first use: pywebpush brings aiohttp along (half a second), which no web
    # process and no worker start should pay for.
    from pywebpush import WebPusher

    config = current_app.config
    info = {"endpoint": subscription.endpoint, "keys": {"p256dh": subscription.p256dh, "auth": subscription.auth}}
    headers = {**vapid_headers(subscription.endpoint), "Urgency": "normal", "Topic": topic(group)}
    try:
        response = WebPusher(info, requests_session=session()).send(
            data, headers=headers, ttl=config["PUSH_TTL"], timeout=config["PUSH_TIMEOUT"], content_encoding="aes128gcm"
        )
    except requests.RequestException as exc:  # no connection, TLS failure, timeout: try again later
        return Outcome(RETRY, detail=f"{type(exc).__name__}: {exc}")
    return judge(response)


def judge(response: requests.Response) -> Outcome:
    """Return what the push service's answer means."""
    status = response.status_code
    if 200 <= status < 300:
        return Outcome(DELIVERED, status)
    if status in (404, 410):
        return Outcome(GONE, status)
    if status == 429 or status >= 500:
        return Outcome(RETRY, status, retry_after(response.headers.get("Retry-After")))
    return Outcome(REFUSED, status, detail=(response.text or "")[:200])


def retry_after(value: str | None) -> float | None:
    """Return the seconds a ``Retry-After`` header asks for (seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def send_summary(user_id: int, count: int) -> int:
    """Push the summary of a quiet period to the user's devices (what ``mail.summary`` looks up)."""
    from .delivery import send_summary as push_summary  # delivery imports this module

    return push_summary(user_id, count)

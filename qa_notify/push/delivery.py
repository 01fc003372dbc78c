"""Who is pushed what after a fan-out, and the sending task's one step: never twice, never in the fan-out.

``enqueue_pushes`` runs after each fan-out batch has committed its inbox rows: one query
finds which of the batch's users have a device at all, and one task per event is queued
for them (``deliver``), so the fan-out pays one indexed query per batch and never waits
for a push service. ``deliver`` then, for each user:

- ``push_wanted``: the user wants this type pushed (the preferences matrix's push column)
  and is not quiet (quiet hours, snooze);
- not online: a user with an open stream saw it live (the away email's presence rule);
- the group's gate: at most one push per user and group every PUSH_MIN_INTERVAL (a Redis
  key set NX with the outbox id, so a retry of the same push passes its own gate); a push
  held back by the gate schedules one push for when the gate opens, which carries the
  group's count then (so a burst is one push now and one with the total later);
- per device, a marker recorded after the push service took it, so a retried task skips
  the devices that already have it: sent once, none twice.

What the push service said: 404/410 forget the device; 429/5xx/no connection make the task
retry (``Report.retry_after``); a refusal is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from flask import current_app
from sqlalchemy import select

from ..events import bus, channels
from ..events.announce import allowed
from ..extensions import db
from ..live.leases import presence
from ..models import Notification, OutboxEvent, PushSubscription, utcnow
from ..quiet import quiet_users
from . import payload, sending, subscriptions, vapid

log = logging.getLogger(__name__)
# A broadcast's pushes go out in tasks of this many users.
USERS_PER_TASK = 500
SENT_MARKER_SECONDS = 2 * 24 * 3600


def push_wanted(user_ids: Iterable[int], event_type: str) -> set[int]:
    """Return which of ``user_ids`` want ``event_type`` pushed to their devices.

    The preferences matrix's ``push`` column (``events.announce.allowed``: the type not
    muted, and push not turned off for it), less the users who are quiet now (quiet hours
    or a snooze, ``qa_notify.quiet``: their period's summary tells them afterwards). Every
    push decision goes through this one function.
    """
    wanted = allowed(user_ids, event_type, "push")
    return wanted - quiet_users(sorted(wanted))


def send_summary(user_id: int, count: int) -> int:
    """Push ``user_id`` the one summary of a quiet period ("3 updates while notifications were
    paused"), unless a stream is open; return how many devices took it.

    Called once per period by ``mail.summary`` (which makes it at most once); not retried.
    """
    own = subscriptions.devices_of([user_id])
    r = bus.redis_client()
    if not own or presence(r, user_id).online:
        return 0
    vapid.load_vapid()
    push = payload.summary(user_id, count)
    report = Report()
    _send_to_devices(r, user_id, own, payload.encode(push), push["tag"], None, report)
    db.session.commit()
    return report.delivered


def enqueue_pushes(deliveries: list[tuple[int, list[int]]], enqueue: Callable[[int, list[int]], object]) -> int:
    """Queue a push task per outbox id for those of its users who have a device; return how many tasks.

    ``deliveries`` are ``(outbox id, user ids)`` just stored by a fan-out batch. One query
    for all of them; nothing is queued for users without a device (almost everyone, as a rule).
    """
    with_devices = subscriptions.users_with_devices({uid for _, uids in deliveries for uid in uids})
    tasks = 0
    for outbox_id, user_ids in deliveries:
        targets = sorted(with_devices.intersection(user_ids))
        for start in range(0, len(targets), USERS_PER_TASK):
            enqueue(outbox_id, targets[start : start + USERS_PER_TASK])
            tasks += 1
    return tasks


def enqueue_pushes_for_everyone(outbox_id: int, enqueue: Callable[[int, list[int]], object]) -> int:
    """Queue push tasks for the users with a device who got ``outbox_id`` (a broadcast) in their inbox."""
    targets = list(
        db.session.scalars(
            select(PushSubscription.user_id)
            .distinct()
            .join(Notification, Notification.user_id == PushSubscription.user_id)
            .where(Notification.outbox_id == outbox_id)
            .order_by(PushSubscription.user_id)
        )
    )
    return enqueue_pushes([(outbox_id, targets)], enqueue) if targets else 0


@dataclass
class Report:
    """What one ``deliver`` did: pushes delivered, users skipped, and what is left to do."""

    delivered: int = 0
    skipped: int = 0
    gone: int = 0
    # Seconds to wait before trying again (None: nothing to retry).
    retry_after: float | None = None
    # (user id, seconds): a push of this event to schedule when the user's gate opens.
    later: list[tuple[int, float]] = field(default_factory=list)

    def wait(self, seconds: float | None) -> None:
        """Ask for a retry, after at least ``seconds``."""
        self.retry_after = max(self.retry_after or 0.0, seconds or 0.0)


def deliver(outbox_id: int, user_ids: list[int], trailing: bool = False) -> Report:
    """Push outbox event ``outbox_id`` to the devices of ``user_ids`` who should have it now.

    ``trailing``: the push a gate held back, due now (it clears its schedule mark first).
    """
    report = Report()
    event = db.session.get(OutboxEvent, outbox_id)
    if event is None:
        return report
    try:
        vapid.load_vapid()
    except vapid.NoKeys as exc:  # push is off on this site: nothing can be signed
        log.warning("web push for outbox %s not sent: %s", outbox_id, exc)
        return report
    r, group = bus.redis_client(), payload.group_of(event)
    wanted = push_wanted(user_ids, event.event_type)
    devices: dict[int, list[PushSubscription]] = {}
    for device in subscriptions.devices_of(sorted(wanted)):
        devices.setdefault(device.user_id, []).append(device)
    for user_id, own in devices.items():
        if trailing:
            r.delete(channels.push_trailing(user_id, group))
        if presence(r, user_id).online or not _through_gate(r, user_id, group, outbox_id, report):
            report.skipped += 1
            continue
        push = payload.build(user_id, event)
        if push is None:
            report.skipped += 1
            continue
        _send_to_devices(r, user_id, own, payload.encode(push), group, outbox_id, report)
    db.session.commit()  # last_used_at
    return report


def _through_gate(r, user_id: int, group: str, outbox_id: int, report: Report) -> bool:
    """Take the user's gate for ``group`` (or find it is this push's own); else schedule a later push."""
    interval = current_app.config["PUSH_MIN_INTERVAL"]
    gate = channels.push_gate(user_id, group)
    if interval <= 0 or r.set(gate, outbox_id, nx=True, ex=interval):
        return True
    holder = r.get(gate)
    if holder is not None and int(holder) == outbox_id:
        return True  # a retry of the push that took the gate
    left_ms = r.pttl(gate)
    if r.set(channels.push_trailing(user_id, group), outbox_id, nx=True, ex=interval + 300):
        report.later.append((user_id, max(left_ms, 0) / 1000 + 0.05))
    return False


def _send_to_devices(
    r, user_id: int, own: list[PushSubscription], data: bytes, group: str, outbox_id: int | None, report
):
    """Send ``data`` to each of the user's devices that does not have it yet (``outbox_id``
    None: a push that is not an event's, sent once by its caller, with no marker)."""
    for device in own:
        marker = channels.push_sent(user_id, device.id, outbox_id) if outbox_id is not None else None
        if marker is not None and r.exists(marker):
            continue
        try:
            outcome = sending.send(device, data, group)
        except Exception as exc:  # a bug or a key the library refuses: this device only, the others go on
            log.exception("push to subscription %s failed", device.id)
            outcome = sending.Outcome(sending.REFUSED, detail=f"{type(exc).__name__}: {exc}")
        if outcome.status == sending.DELIVERED:
            if marker is not None:
                r.set(marker, 1, ex=SENT_MARKER_SECONDS)
            device.last_used_at = utcnow()
            report.delivered += 1
        elif outcome.status == sending.GONE:
            log.info("push subscription %s of user %s is gone (%s): removed", device.id, user_id, outcome.http_status)
            db.session.delete(device)
            report.gone += 1
        elif outcome.status == sending.RETRY:
            log.warning("push to subscription %s deferred: %s %s", device.id, outcome.http_status or "", outcome.detail)
            report.wait(outcome.retry_after)
        else:
            log.warning("push to subscription %s refused (%s): %s", device.id, outcome.http_status, outcome.detail)

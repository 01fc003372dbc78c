"""Quiet hours and snooze: whether a user may be interrupted now, the one place of that rule.

A user has a time zone (an IANA name; UTC until the browser or the user sets one), optional
quiet hours (minutes after local midnight, ``start`` inclusive, ``end`` exclusive; a window
may cross midnight: 22:00-08:00) and an optional snooze (until a UTC time). They are quiet
while either applies; a snooze and a window that touch or overlap are one quiet period, and
``quiet_until`` is its end. While quiet: no toast, desktop notification, push or email; the
inbox and the badge still fill. Times are naive UTC datetimes, as the database keeps them.

Everything else asks here: the email scan and the digest (``mail.scan``), the summary at
the end of a period (``mail.summary``), the push sender (``quiet_users``, one query for a
batch), and the page, which is told ``{quiet, until, next_from}`` (``quiet_state``) on load
and by a live ``quiet`` event when it changes, and never works out a window itself.

It is a module of its own, not part of ``preferences``, so that ``mail`` and ``push`` can
import the rule without importing the preferences pages (which import ``mail``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, available_timezones

from flask_babel import gettext as _
from sqlalchemy import or_, select

from .events import bus
from .events.types import QuietEvent
from .extensions import db
from .models import User, utcnow

log = logging.getLogger(__name__)
DEFAULT_TIME_ZONE = "UTC"
MAX_TIME_ZONE = 64
MINUTES_PER_DAY = 24 * 60
MAX_SNOOZE_MINUTES = 7 * MINUTES_PER_DAY
# "Snooze until tomorrow" ends at the end of the user's quiet hours, or at this local time.
TOMORROW_MORNING = 8 * 60
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)\Z")


@dataclass(frozen=True)
class QuietSettings:
    """What decides whether a user is quiet: their zone, window and snooze (a row's columns)."""

    time_zone: str | None
    quiet_start: int | None
    quiet_end: int | None
    snooze_until: datetime | None

    @classmethod
    def of(cls, user: User) -> QuietSettings:
        """Return ``user``'s settings."""
        return cls(user.time_zone, user.quiet_start, user.quiet_end, user.snooze_until)

    @property
    def has_window(self) -> bool:
        """True when quiet hours are set."""
        return self.quiet_start is not None and self.quiet_end is not None and self.quiet_start != self.quiet_end


# -- time zones and local clocks ---------------------------------------------------------


@lru_cache(maxsize=1)
def time_zone_names() -> frozenset[str]:
    """Return the IANA zone names this machine knows."""
    return frozenset(available_timezones())


def valid_time_zone(name: object) -> str:
    """Return ``name`` if it is an IANA time zone name; raise ValueError otherwise (paths, garbage)."""
    if not isinstance(name, str) or not name or len(name) > MAX_TIME_ZONE or name not in time_zone_names():
        raise ValueError(_("'time_zone' must be an IANA time zone name, such as Europe/Paris or UTC"))
    return name


@lru_cache(maxsize=1024)
def zone(name: str | None) -> ZoneInfo:
    """Return the zone named ``name``; UTC for None or a name this machine no longer knows."""
    if name and name in time_zone_names():
        return ZoneInfo(name)
    return ZoneInfo(DEFAULT_TIME_ZONE)


def parse_clock(value: object) -> int | None:
    """Return a local time of day as minutes after midnight: "HH:MM" or an int 0..1439; None stays None.

    Raise ValueError for anything else.
    """
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < MINUTES_PER_DAY:
        return value
    if isinstance(value, str):
        match = _CLOCK.match(value.strip())
        if match:
            return int(match.group(1)) * 60 + int(match.group(2))
    raise ValueError(_('Quiet hours are times of day, "HH:MM" (00:00 to 23:59).'))


def format_clock(minutes: int | None) -> str | None:
    """Return minutes after midnight as "HH:MM"."""
    return None if minutes is None else f"{minutes // 60:02d}:{minutes % 60:02d}"


def _local(now: datetime, tz: ZoneInfo) -> datetime:
    return now.replace(tzinfo=UTC).astimezone(tz)


def _at(day: date, minutes: int, tz: ZoneInfo) -> datetime:
    """The UTC instant (naive) of local ``day`` at ``minutes`` after midnight in ``tz``."""
    local = datetime.combine(day, time(minutes // 60, minutes % 60), tzinfo=tz)
    return local.astimezone(UTC).replace(tzinfo=None)


def last_local_time(time_zone: str | None, minutes: int, now: datetime) -> datetime:
    """Return the latest instant (naive UTC) at or before ``now`` when it was ``minutes`` o'clock locally."""
    tz = zone(time_zone)
    today = _local(now, tz).date()
    candidate = _at(today, minutes, tz)
    return candidate if candidate <= now else _at(today - timedelta(days=1), minutes, tz)


def next_local_time(time_zone: str | None, minutes: int, now: datetime) -> datetime:
    """Return the first instant (naive UTC) after ``now`` when it is ``minutes`` o'clock locally."""
    tz = zone(time_zone)
    today = _local(now, tz).date()
    candidate = _at(today, minutes, tz)
    return candidate if candidate > now else _at(today + timedelta(days=1), minutes, tz)


# -- the rule ---------------------------------------------------------------------------


def in_window(settings: QuietSettings, now: datetime) -> bool:
    """True when ``now`` falls in the user's quiet hours (start inclusive, end exclusive)."""
    if not settings.has_window:
        return False
    local = _local(now, zone(settings.time_zone))
    minute = local.hour * 60 + local.minute
    start, end = settings.quiet_start, settings.quiet_end
    assert start is not None and end is not None
    if start < end:
        return start <= minute < end
    return minute >= start or minute < end  # the window crosses midnight


def quiet_until(settings: QuietSettings, now: datetime) -> datetime | None:
    """Return when the user's current quiet period ends (naive UTC), or None when they are not quiet.

    A snooze running into quiet hours (or the other way round) is one period: its end is
    where neither applies any more.
    """
    end = None
    moment = now
    for _step in range(4):  # snooze -> window -> snooze ...: a few steps at most
        ends = []
        if settings.snooze_until is not None and settings.snooze_until > moment:
            ends.append(settings.snooze_until)
        if in_window(settings, moment):
            assert settings.quiet_end is not None
            ends.append(next_local_time(settings.time_zone, settings.quiet_end, moment))
        if not ends:
            break
        end = moment = max(ends)
    return end


def is_quiet(user: User, now: datetime | None = None) -> bool:
    """True while ``user`` must not be interrupted (quiet hours or snooze)."""
    return quiet_until(QuietSettings.of(user), now or utcnow()) is not None


def next_quiet_from(settings: QuietSettings, now: datetime) -> datetime | None:
    """Return when the next quiet hours begin (naive UTC), None without quiet hours."""
    if not settings.has_window:
        return None
    assert settings.quiet_start is not None
    after = quiet_until(settings, now) or now
    return next_local_time(settings.time_zone, settings.quiet_start, after)


def period_start(settings: QuietSettings, now: datetime) -> datetime:
    """Return when the quiet period ``now`` is in began, as far as the settings tell (else ``now``)."""
    if in_window(settings, now):
        assert settings.quiet_start is not None
        return min(now, last_local_time(settings.time_zone, settings.quiet_start, now))
    return now


def quiet_users(user_ids: list[int], now: datetime | None = None) -> set[int]:
    """Return which of ``user_ids`` are quiet now: ONE query for the whole batch."""
    if not user_ids:
        return set()
    now = now or utcnow()
    rows = db.session.execute(
        select(User.id, User.time_zone, User.quiet_start, User.quiet_end, User.snooze_until).where(
            User.id.in_(user_ids), or_(User.snooze_until > now, User.quiet_start.is_not(None))
        )
    ).all()
    return {row.id for row in rows if quiet_until(QuietSettings(*row[1:]), now) is not None}


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="seconds") + "Z"


def quiet_state(user: User, now: datetime | None = None) -> dict:
    """Return the user's quiet settings and state as the API and the page see them."""
    now = now or utcnow()
    settings = QuietSettings.of(user)
    until = quiet_until(settings, now)
    snoozed = user.snooze_until if user.snooze_until and user.snooze_until > now else None
    return {
        "quiet": until is not None,
        "until": _iso(until),
        "next_from": _iso(next_quiet_from(settings, now)),
        "snoozed_until": _iso(snoozed),
        "time_zone": user.time_zone or DEFAULT_TIME_ZONE,
        "time_zone_set": user.time_zone is not None,
        "quiet_start": format_clock(user.quiet_start) if settings.has_window else None,
        "quiet_end": format_clock(user.quiet_end) if settings.has_window else None,
    }


# -- changing the settings ----------------------------------------------------------------


def set_quiet_preferences(user_id: int, changes: dict) -> User:
    """Apply ``changes``: ``time_zone`` (an IANA name) and/or ``quiet_start`` with ``quiet_end``.

    Quiet hours are given both at once ("HH:MM" each, or both None for none); start == end
    is refused. Raise ValueError for anything bad, changing nothing. Open pages are told.
    """
    user = db.session.get(User, user_id)
    assert user is not None
    time_zone = valid_time_zone(changes["time_zone"]) if "time_zone" in changes else user.time_zone
    start, end = user.quiet_start, user.quiet_end
    if "quiet_start" in changes or "quiet_end" in changes:
        if "quiet_start" not in changes or "quiet_end" not in changes:
            raise ValueError(_("Give 'quiet_start' and 'quiet_end' together (both null for no quiet hours)."))
        start, end = parse_clock(changes["quiet_start"]), parse_clock(changes["quiet_end"])
        if (start is None) != (end is None):
            raise ValueError(_("Give both a start and an end of quiet hours, or neither."))
        if start is not None and start == end:
            raise ValueError(_("Quiet hours must end at another time than they start."))
    user.time_zone, user.quiet_start, user.quiet_end = time_zone, start, end
    db.session.commit()
    tell_open_pages(user)
    return user


def snooze(user_id: int, minutes: int | None = None, until: str | None = None) -> User:
    """Snooze ``user_id`` for ``minutes`` (1 to a week), or ``until="tomorrow"`` (the end of
    their quiet hours, else 08:00 local, whichever comes next). Raise ValueError otherwise."""
    user = db.session.get(User, user_id)
    assert user is not None
    now = utcnow()
    if (minutes is None) == (until is None):
        raise ValueError(_("Give 'minutes' (1 to %(num)d) or 'until': \"tomorrow\".", num=MAX_SNOOZE_MINUTES))
    if minutes is not None:
        if isinstance(minutes, bool) or not isinstance(minutes, int) or not 0 < minutes <= MAX_SNOOZE_MINUTES:
            raise ValueError(_("'minutes' must be a whole number from 1 to %(num)d.", num=MAX_SNOOZE_MINUTES))
        end = now + timedelta(minutes=minutes)
    elif until == "tomorrow":
        morning = user.quiet_end if QuietSettings.of(user).has_window else TOMORROW_MORNING
        assert morning is not None
        end = next_local_time(user.time_zone, morning, now)
    else:
        raise ValueError(_("'until' must be \"tomorrow\"."))
    user.snooze_until = end.replace(microsecond=0)
    if user.quiet_summary_from is None:  # a period begins now (unless one already runs)
        user.quiet_summary_from = now
    db.session.commit()
    tell_open_pages(user)
    return user


def stop_snooze(user_id: int) -> User:
    """End ``user_id``'s snooze now (quiet hours still apply)."""
    user = db.session.get(User, user_id)
    assert user is not None
    user.snooze_until = None
    db.session.commit()
    tell_open_pages(user)
    return user


def tell_open_pages(user: User) -> None:
    """Send the user's open pages their quiet state now (a live-only ``quiet`` event)."""
    r = bus.redis_client_or_none()
    if r is None:
        return
    state = quiet_state(user)
    event = QuietEvent(quiet=state["quiet"], until=state["until"], next_from=state["next_from"])
    try:
        bus.push_live(r, user.id, event)
    except Exception:  # the pages learn it at their next load or timer
        log.warning("could not tell user %s's open pages their quiet state", user.id, exc_info=True)

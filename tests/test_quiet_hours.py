"""Quiet hours, snooze and the time zone: the API refuses bad input, windows cross midnight in
the user's zone, nobody is emailed while quiet and one summary follows, and the daily digest
goes at the user's local hour.

Emails go to a real SMTP server (aiosmtpd), notifications come from real answers through the
API, and the beat's tasks run as Celery tasks (eager here). Times that must not depend on
when the suite runs are a fixed ``now``.
"""

from __future__ import annotations

import html
import json
import re
import sys
import types
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import event, select, update

from qa_notify import quiet
from qa_notify.extensions import db
from qa_notify.mail import scan
from qa_notify.models import EmailMessage, Notification, User, utcnow

from .test_email import answer_as, ask, asker_with_email, text_of

ADDRESS = "quiet@example.org"


@pytest.fixture
def app_config(app_config, smtp, tmp_path) -> dict:
    app_config.update(
        EMAIL_AWAY_SECONDS=0,
        EMAIL_DIGEST_HOUR=7,
        MAIL_SERVER="127.0.0.1",
        MAIL_PORT=str(smtp.port),
        MAIL_USE_TLS=False,
        MAIL_FILE_DIR=str(tmp_path / "mail"),
        SITE_URL="https://qa.example.org",
    )
    return app_config


@pytest.fixture
def pushes(monkeypatch) -> list[tuple[int, int]]:
    """The push sender's ``send_summary``, recording what it was asked to send."""
    sent: list[tuple[int, int]] = []
    package = types.ModuleType("qa_notify.push")
    module = types.ModuleType("qa_notify.push.sending")
    module.send_summary = lambda user_id, count: sent.append((user_id, count))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "qa_notify.push", package)
    monkeypatch.setitem(sys.modules, "qa_notify.push.sending", module)
    return sent


def run_task(app, name: str):
    with app.app_context():
        return app.extensions["celery"].tasks[name].apply().get()


def emails(app) -> list[tuple[str, str, int]]:
    with app.app_context():
        rows = db.session.scalars(select(EmailMessage).order_by(EmailMessage.id))
        return [(e.kind, e.status, e.notification_count) for e in rows]


def state(client) -> dict:
    resp = client.get("/api/preferences/quiet")
    assert resp.status_code == 200
    return resp.get_json()


# -- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"time_zone": "Mars/Olympus_Mons"},
        {"time_zone": "../../../etc/passwd"},
        {"time_zone": "/usr/share/zoneinfo/UTC"},
        {"time_zone": "utc "},
        {"time_zone": ""},
        {"time_zone": 5},
        {"time_zone": "Europe/Paris\x00"},
        {"time_zone": "E" * 5000},
        {"quiet_start": "22:00", "quiet_end": "22:00"},
        {"quiet_start": 600, "quiet_end": 600},
        {"quiet_start": "22:00"},
        {"quiet_start": "22:00", "quiet_end": None},
        {"quiet_start": "24:00", "quiet_end": "08:00"},
        {"quiet_start": "7:5", "quiet_end": "08:00"},
        {"quiet_start": True, "quiet_end": "08:00"},
        {"quiet_start": 1440, "quiet_end": 0},
        {"muted": []},
        {"time_zone": "UTC", "colour": "blue"},
    ],
)
def test_bad_quiet_settings_are_a_422_and_change_nothing(login_as, body):
    ann = login_as("ann")
    assert ann.put("/api/preferences/quiet", {"time_zone": "Europe/Paris"}).status_code == 200
    before = state(ann)
    resp = ann.put("/api/preferences/quiet", body)
    assert resp.status_code == 422, resp.get_json()
    assert resp.get_json()["error"]
    assert state(ann) == before


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"minutes": 0},
        {"minutes": -60},
        {"minutes": 7 * 24 * 60 + 1},
        {"minutes": "60"},
        {"minutes": 1.5},
        {"minutes": True},
        {"until": "next week"},
        {"until": 1},
        {"minutes": 60, "until": "tomorrow"},
        {"for": 60},
    ],
)
def test_bad_snoozes_are_a_422_and_do_not_snooze(login_as, body):
    ann = login_as("ann")
    resp = ann.post("/api/preferences/snooze", body)
    assert resp.status_code == 422, resp.get_json()
    assert resp.get_json()["error"]
    assert state(ann)["quiet"] is False


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/preferences/quiet"),
        ("put", "/api/preferences/quiet"),
        ("post", "/api/preferences/snooze"),
        ("delete", "/api/preferences/snooze"),
    ],
)
def test_quiet_routes_need_a_login_and_a_csrf_token(api, login_as, method, path):
    anonymous = getattr(api, method)(path, {"minutes": 60}) if method != "get" else api.get(path)
    assert anonymous.status_code == 401
    ann = login_as("ann")
    if method != "get":  # a logged-in call without the token changes nothing
        raw = getattr(ann.client, method)(path, json={"minutes": 60, "time_zone": "Asia/Tokyo"})
        assert raw.status_code == 400
        assert "CSRF" in raw.get_json()["error"]
        assert state(ann)["quiet"] is False and state(ann)["time_zone_set"] is False


def test_the_api_saves_a_zone_and_quiet_hours_and_snoozes(login_as):
    ann = login_as("ann")
    fresh = state(ann)
    assert (fresh["time_zone"], fresh["time_zone_set"], fresh["quiet"]) == ("UTC", False, False)
    saved = ann.put(
        "/api/preferences/quiet", {"time_zone": "Asia/Kolkata", "quiet_start": "22:30", "quiet_end": "07:15"}
    )
    assert saved.status_code == 200
    body = saved.get_json()
    assert (body["time_zone"], body["time_zone_set"], body["quiet_start"], body["quiet_end"]) == (
        "Asia/Kolkata",
        True,
        "22:30",
        "07:15",
    )
    assert body["next_from"] or body["until"]
    snoozed = ann.post("/api/preferences/snooze", {"minutes": 90}).get_json()
    assert snoozed["quiet"] is True
    until = datetime.fromisoformat(snoozed["until"].removesuffix("Z"))
    assert until >= utcnow() + timedelta(minutes=89)
    assert ann.delete("/api/preferences/snooze").get_json()["snoozed_until"] is None
    cleared = ann.put("/api/preferences/quiet", {"quiet_start": None, "quiet_end": None}).get_json()
    assert (cleared["quiet_start"], cleared["quiet_end"], cleared["next_from"]) == (None, None, None)


# -- the rule, at fixed times ---------------------------------------------------------------


NIGHT_IN_NEW_YORK = quiet.QuietSettings("America/New_York", 22 * 60, 7 * 60, None)


@pytest.mark.parametrize(
    ("now", "until"),
    [
        (datetime(2026, 7, 1, 1, 59), None),  # 21:59 EDT: not yet
        (datetime(2026, 7, 1, 2, 0), datetime(2026, 7, 1, 11, 0)),  # 22:00 EDT: until 07:00 EDT
        (datetime(2026, 7, 1, 4, 30), datetime(2026, 7, 1, 11, 0)),  # 00:30, past local midnight
        (datetime(2026, 7, 1, 10, 59), datetime(2026, 7, 1, 11, 0)),  # 06:59
        (datetime(2026, 7, 1, 11, 0), None),  # 07:00: over
        (datetime(2026, 1, 15, 2, 30), None),  # 21:30 EST (winter, UTC-5)
        (datetime(2026, 1, 15, 3, 0), datetime(2026, 1, 15, 12, 0)),  # 22:00 EST until 07:00 EST
        (datetime(2026, 3, 8, 5, 0), datetime(2026, 3, 8, 11, 0)),  # the night clocks go forward
    ],
)
def test_a_window_crossing_midnight_follows_the_users_zone(now, until):
    assert quiet.quiet_until(NIGHT_IN_NEW_YORK, now) == until
    if until is None:
        assert quiet.next_quiet_from(NIGHT_IN_NEW_YORK, now) > now


def test_a_snooze_running_into_quiet_hours_is_one_period_and_next_from_is_after_it():
    # Kolkata is UTC+5:30: 22:30-07:15 local is 17:00-01:45 UTC.
    nights = quiet.QuietSettings("Asia/Kolkata", 22 * 60 + 30, 7 * 60 + 15, datetime(2026, 5, 4, 17, 30))
    assert quiet.quiet_until(nights, datetime(2026, 5, 4, 16, 0)) == datetime(2026, 5, 5, 1, 45)
    assert quiet.next_quiet_from(nights, datetime(2026, 5, 4, 16, 0)) == datetime(2026, 5, 5, 17, 0)
    short = quiet.QuietSettings("Asia/Kolkata", 22 * 60 + 30, 7 * 60 + 15, datetime(2026, 5, 4, 16, 30))
    assert quiet.quiet_until(short, datetime(2026, 5, 4, 16, 0)) == datetime(2026, 5, 4, 16, 30)
    assert quiet.next_quiet_from(short, datetime(2026, 5, 4, 16, 0)) == datetime(2026, 5, 4, 17, 0)


def test_quiet_users_answers_for_a_batch_in_one_query(app, make_user):
    now = datetime(2026, 7, 1, 4, 30)  # 00:30 in New York, 13:30 in Tokyo
    ids = [make_user(name).id for name in ("night_ny", "night_tokyo", "snoozed", "plain", "snooze_over")]
    settings = [
        {"time_zone": "America/New_York", "quiet_start": 22 * 60, "quiet_end": 7 * 60},
        {"time_zone": "Asia/Tokyo", "quiet_start": 22 * 60, "quiet_end": 7 * 60},
        {"snooze_until": now + timedelta(minutes=5)},
        {},
        {"snooze_until": now - timedelta(minutes=5)},
    ]
    with app.app_context():
        for uid, values in zip(ids, settings, strict=True):
            if values:
                db.session.execute(update(User).where(User.id == uid).values(**values))
        db.session.commit()
        statements = []

        def count(*_args):
            statements.append(1)

        event.listen(db.engine, "before_cursor_execute", count)
        try:
            assert quiet.quiet_users(ids, now) == {ids[0], ids[2]}
        finally:
            event.remove(db.engine, "before_cursor_execute", count)
        assert len(statements) == 1


# -- email while quiet, and the summary after -------------------------------------------------


def test_no_email_while_snoozed_then_one_summary_email_and_push(app, smtp, login_as, pushes):
    asker = asker_with_email(login_as, smtp, "asker", ADDRESS)
    qid = ask(asker, "Quiet please")
    assert asker.post("/api/preferences/snooze", {"minutes": 60}).status_code == 200
    answer_as(login_as, ["bob", "carl"], qid)

    assert run_task(app, "workers.scan_email") == 0  # quiet: not even handed out
    with app.app_context():
        assert scan.email_away(asker.user_id) == "quiet"  # and a task that had it says no
    run_task(app, "workers.track_quiet_periods")  # still snoozed: nothing ends
    assert smtp.messages == [] and pushes == []

    assert asker.delete("/api/preferences/snooze").status_code == 200
    assert run_task(app, "workers.track_quiet_periods") == 1
    [message] = smtp.to(ADDRESS)
    assert message["Subject"] == "1 update while notifications were paused"
    assert "carl and 1 other answered \u201cQuiet please\u201d" in text_of(message)
    assert pushes == [(asker.user_id, 2)]

    # Exactly once: later beats and the away scan send nothing more for that period.
    assert run_task(app, "workers.track_quiet_periods") == 0
    run_task(app, "workers.scan_email")
    assert len(smtp.to(ADDRESS)) == 1 and pushes == [(asker.user_id, 2)]
    assert emails(app) == [("quiet", "sent", 2)]


def _window_around_now(zone: str) -> tuple[str, str]:
    local = datetime.now(ZoneInfo(zone))
    minute = local.hour * 60 + local.minute
    return quiet.format_clock((minute - 60) % 1440), quiet.format_clock((minute + 60) % 1440)  # type: ignore[return-value]


def test_quiet_hours_in_the_users_zone_hold_email_and_the_summary_follows_their_end(app, smtp, login_as, pushes):
    asker = asker_with_email(login_as, smtp, "asker", ADDRESS)
    qid = ask(asker, "Night owls")
    start, end = _window_around_now("Pacific/Auckland")
    resp = asker.put(
        "/api/preferences/quiet", {"time_zone": "Pacific/Auckland", "quiet_start": start, "quiet_end": end}
    )
    assert resp.get_json()["quiet"] is True
    assert run_task(app, "workers.track_quiet_periods") == 0  # the period began (an hour ago)
    answer_as(login_as, ["bob"], qid)
    run_task(app, "workers.scan_email")
    run_task(app, "workers.track_quiet_periods")
    assert smtp.messages == [] and pushes == []

    # The same window in UTC is not "now" in most of the world's day: Auckland's is what counts.
    assert asker.put("/api/preferences/quiet", {"quiet_start": None, "quiet_end": None}).get_json()["quiet"] is False
    assert run_task(app, "workers.track_quiet_periods") == 1
    [message] = smtp.to(ADDRESS)
    assert "bob answered \u201cNight owls\u201d" in text_of(message)
    assert pushes == [(asker.user_id, 1)]


def test_a_quiet_period_with_nothing_new_sends_no_summary(app, smtp, login_as, pushes):
    asker = asker_with_email(login_as, smtp, "asker", ADDRESS)
    asker.post("/api/preferences/snooze", {"minutes": 30})
    asker.delete("/api/preferences/snooze")
    assert run_task(app, "workers.track_quiet_periods") == 1
    assert smtp.messages == [] and pushes == []
    with app.app_context():
        assert db.session.get(User, asker.user_id).quiet_summary_from is None


# -- the digest at the user's local hour -------------------------------------------------------


def _digest_user(app, login_as, smtp, name: str, zone: str, checked: datetime) -> int:
    client = asker_with_email(login_as, smtp, name, f"{name}@example.org", mode="digest")
    qid = ask(client, f"A question of {name}")
    answer_as(login_as, [f"{name}_friend"], qid)
    with app.app_context():
        db.session.execute(
            update(User).where(User.id == client.user_id).values(time_zone=zone, digest_checked_at=checked)
        )
        db.session.execute(
            update(Notification)
            .where(Notification.user_id == client.user_id)
            .values(created_at=utcnow() - timedelta(hours=3))
        )
        db.session.commit()
    return client.user_id


def start_digests(app, now: datetime) -> int:
    """The beat's digest run (every 15 minutes) as if it were ``now``."""
    with app.app_context():
        task = app.extensions["celery"].tasks["workers.email_users"]
        return scan.start_digests(lambda kind, ids: task.apply(args=[kind, ids]).get(), now=now)


def test_the_digest_goes_at_seven_in_each_users_own_zone(app, smtp, login_as):
    first = datetime(2026, 6, 1, 22, 10)  # 07:10 on June 2 in Tokyo, 18:10 on June 1 in New York
    _digest_user(app, login_as, smtp, "tokyo", "Asia/Tokyo", checked=first - timedelta(hours=25))
    _digest_user(app, login_as, smtp, "newyork", "America/New_York", checked=datetime(2026, 6, 1, 11, 5))
    sleeper = _digest_user(app, login_as, smtp, "sleeper", "Asia/Tokyo", checked=first - timedelta(hours=25))
    with app.app_context():  # snoozed through Tokyo's 07:00
        db.session.execute(update(User).where(User.id == sleeper).values(snooze_until=first + timedelta(hours=1)))
        db.session.commit()

    assert start_digests(app, first) == 1
    assert [m["To"] for m in smtp.messages] == ["tokyo@example.org"]
    assert start_digests(app, first + timedelta(minutes=15)) == 0  # once a day, not once a run

    assert start_digests(app, first + timedelta(hours=1, minutes=15)) == 1  # the snooze is over
    assert start_digests(app, datetime(2026, 6, 2, 11, 10)) == 1  # 07:10 in New York
    assert [m["To"] for m in smtp.messages] == ["tokyo@example.org", "sleeper@example.org", "newyork@example.org"]
    assert all(m["Subject"] == "Your daily digest: 1 update" for m in smtp.messages)
    assert start_digests(app, datetime(2026, 6, 2, 12, 10)) == 0


def test_every_page_comes_with_the_quiet_state_so_no_event_toasts_before_it_is_known(login_as):
    ann = login_as("ann")
    ann.post("/api/preferences/snooze", {"minutes": 60})
    page = ann.get("/").get_data(as_text=True)
    attribute = re.search(r"data-quiet='([^']*)'", page)
    assert attribute, "no data-quiet on the page"
    shown = json.loads(html.unescape(attribute.group(1)))
    assert shown["quiet"] is True and shown["until"] == state(ann)["until"]


def test_a_chinese_reader_reads_why_their_quiet_hours_were_refused(login_as):
    ann = login_as("ann")
    resp = ann.put(
        "/api/preferences/quiet", {"quiet_start": "22:00", "quiet_end": "22:00"}, headers={"Accept-Language": "zh-CN"}
    )
    assert resp.status_code == 422
    assert resp.get_json()["error"] == "免打扰时段的结束时间不能与开始时间相同。"


def test_the_beat_looks_for_due_digests_every_quarter_hour_and_for_quiet_periods_every_minute(app):
    from workers import beat_schedule

    schedule = beat_schedule(app)
    digests = schedule["send-digests"]["schedule"]
    # Every hour of the day is some zone's digest hour, and some zones are :30 or :45 off UTC.
    assert digests.minute == {0, 15, 30, 45} and len(digests.hour) == 24
    assert schedule["quiet-periods"] == {"task": "workers.track_quiet_periods", "schedule": 60.0}

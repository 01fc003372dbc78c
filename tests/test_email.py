"""Email for people who are away, against a real SMTP server (aiosmtpd) and the real Redis.

Notifications come from real answers posted through the API; the scan and the digest run as
the beat runs them (Celery tasks, eager here); what a user would see is read back from what
the SMTP server received.
"""

from __future__ import annotations

import logging
import re
import time
from datetime import timedelta
from email import message_from_bytes, policy

import pytest
from sqlalchemy import func, insert, select, update

from qa_notify.extensions import db
from qa_notify.live.leases import StreamQuota
from qa_notify.mail.confirm import confirm_token
from qa_notify.models import EmailMessage, Notification, OutboxEvent, User, utcnow

from .smtp import SMTPSink, confirm_address, html_of, text_of

ADDRESS = "asker@example.org"


@pytest.fixture
def mail_settings(smtp) -> dict:
    """The SMTP settings a test runs with (a test may parametrize this name to change them)."""
    return {"MAIL_SERVER": "127.0.0.1", "MAIL_PORT": str(smtp.port), "MAIL_USE_TLS": False}


@pytest.fixture
def app_config(app_config, mail_settings, tmp_path) -> dict:
    app_config.update(
        EMAIL_AWAY_SECONDS=0,
        EMAIL_MIN_INTERVAL=3600,
        EMAIL_SCAN_SECONDS=0.2,  # the first retry after a failure waits this long (doubling)
        MAIL_DEFAULT_SENDER="qa_notify <noreply@qa.example.org>",
        MAIL_FILE_DIR=str(tmp_path / "mail"),
        SITE_URL="https://qa.example.org",
        **mail_settings,
    )
    return app_config


def scan(app) -> int:
    """Run the away scan once, as the beat does every EMAIL_SCAN_SECONDS."""
    with app.app_context():
        return app.extensions["celery"].tasks["workers.scan_email"].apply().get()


def send_digests(app) -> int:
    """Run the daily digest, as the beat does at EMAIL_DIGEST_HOUR."""
    with app.app_context():
        return app.extensions["celery"].tasks["workers.send_digests"].apply().get()


def asker_with_email(login_as, smtp, name: str = "asker", address: str = ADDRESS, mode: str = "away"):
    """A user with a confirmed address: saved through the API, confirmed through the link's route.

    The confirmation email itself is dropped from ``smtp`` (some tests break the mail server
    on purpose, so the link is made here; ``test_a_new_address_is_emailed_only_once_confirmed``
    follows the real email's link).
    """
    client = login_as(name)
    resp = client.put("/api/preferences", {"email": address, "email_mode": mode})
    assert resp.status_code == 200, resp.get_json()
    smtp.messages[:] = [m for m in smtp.messages if not m["Subject"].startswith("Confirm your email")]
    app = client.client.application
    with app.test_request_context():
        token = confirm_token(client.user_id, resp.get_json()["email"])
    assert app.test_client().post(f"/email/confirm/{token}").status_code == 200
    return client


def ask(client, title: str) -> int:
    return client.post("/api/questions", {"title": title}).get_json()["id"]


def answer_as(login_as, names: list[str], qid: int) -> None:
    for name in names:
        client = login_as(name)
        assert client.post(f"/api/questions/{qid}/answers", {"body": f"{name} says hi"}).status_code == 201


def unsubscribe_path(message) -> str:
    url = message["List-Unsubscribe"].strip().strip("<>")
    assert url.startswith("https://qa.example.org/email/unsubscribe/")
    return url.removeprefix("https://qa.example.org")


def user_row(app, user_id: int) -> User:
    with app.app_context():
        user = db.session.get(User, user_id)
        db.session.expunge(user)
        return user


def emails_recorded(app) -> list[tuple[str, str, int]]:
    with app.app_context():
        return [
            (e.kind, e.status, e.notification_count)
            for e in db.session.scalars(select(EmailMessage).order_by(EmailMessage.id))
        ]


def unemailed(app, user_id: int) -> int:
    with app.app_context():
        return db.session.scalar(
            select(func.count())
            .select_from(Notification)
            .where(Notification.user_id == user_id, Notification.email_id.is_(None))
        )


# -- away emails --------------------------------------------------------------------------


def test_away_email_batches_everything_pending_grouped_and_is_sent_once(app, smtp, login_as):
    asker = asker_with_email(login_as, smtp)
    sse = ask(asker, "How do SSE retries work?")
    other = ask(asker, "Why Valkey?")
    answer_as(login_as, ["bob", "carl", "dora"], sse)
    answer_as(login_as, ["erin"], other)

    scan(app)
    scan(app)  # the next scan finds nothing new to say

    [message] = smtp.to(ADDRESS)
    assert message["From"] == "qa_notify <noreply@qa.example.org>"
    assert message["Subject"] == "2 updates while you were away"
    text = text_of(message)
    assert "4 notifications were waiting for you" in text
    assert "dora and 2 others answered \u201cHow do SSE retries work?\u201d" in text
    assert "erin answered \u201cWhy Valkey?\u201d" in text
    assert text.index("erin answered") < text.index("dora and 2 others")  # newest group first
    assert f"https://qa.example.org/questions/{sse}" in text
    html = html_of(message)
    assert "dora and 2 others answered \u201cHow do SSE retries work?\u201d" in html
    assert 'href="https://qa.example.org/inbox"' in html
    assert emails_recorded(app) == [("away", "sent", 4)]
    assert unemailed(app, asker.user_id) == 0


def test_every_email_has_one_click_unsubscribe_headers_and_a_link_in_both_parts(app, smtp, login_as):
    asker = asker_with_email(login_as, smtp)
    answer_as(login_as, ["bob"], ask(asker, "Headers?"))
    scan(app)
    [message] = smtp.to(ADDRESS)
    assert message["Subject"] == "bob answered \u201cHeaders?\u201d"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = "https://qa.example.org" + unsubscribe_path(message)
    assert link in text_of(message) and link in html_of(message)


def test_no_email_while_a_stream_is_open(app, smtp, login_as, r):
    asker = asker_with_email(login_as, smtp)
    answer_as(login_as, ["bob", "carl"], ask(asker, "Seen live"))
    quota = StreamQuota(r, limit=10, lease_seconds=60)
    assert quota.claim(asker.user_id, "tab-1")  # what the hub does when a tab opens the stream
    scan(app)
    assert smtp.to(ADDRESS) == []
    quota.release(asker.user_id, "tab-1")  # the tab closes: they saw both answers live
    scan(app)
    assert smtp.to(ADDRESS) == []
    assert emails_recorded(app) == []


def test_a_stream_open_after_the_notification_saw_it_one_closed_before_did_not(app, smtp, login_as, r):
    asker = asker_with_email(login_as, smtp)
    quota = StreamQuota(r, limit=10, lease_seconds=60)
    qid = ask(asker, "Presence")
    assert quota.claim(asker.user_id, "tab-1")
    quota.release(asker.user_id, "tab-1")  # last seen before the first answer
    time.sleep(0.05)
    answer_as(login_as, ["bob"], qid)
    time.sleep(0.05)
    assert quota.claim(asker.user_id, "tab-2")  # back in a tab: bob's answer reached it
    quota.release(asker.user_id, "tab-2")
    time.sleep(0.05)
    answer_as(login_as, ["carl"], qid)  # after the tab closed: never seen
    scan(app)
    [message] = smtp.to(ADDRESS)
    text = text_of(message)
    assert "carl answered \u201cPresence\u201d" in text and "bob" not in text
    assert "1 notification was waiting for you" in text


def test_read_notifications_are_not_emailed(app, smtp, login_as):
    asker = asker_with_email(login_as, smtp)
    answer_as(login_as, ["bob"], ask(asker, "Read it"))
    assert asker.post("/api/notifications/read", {"all": True}).status_code == 200
    scan(app)
    assert smtp.to(ADDRESS) == []


def test_at_most_one_away_email_per_min_interval(app, smtp, login_as):
    asker = asker_with_email(login_as, smtp)
    qid = ask(asker, "Interval")
    answer_as(login_as, ["bob"], qid)
    scan(app)
    answer_as(login_as, ["carl", "dora"], qid)
    scan(app)
    assert len(smtp.to(ADDRESS)) == 1, "a second email within EMAIL_MIN_INTERVAL"
    with app.app_context():  # an hour passes
        db.session.execute(
            update(User).where(User.id == asker.user_id).values(last_emailed_at=utcnow() - timedelta(hours=2))
        )
        db.session.commit()
    scan(app)
    first, second = smtp.to(ADDRESS)
    assert "bob" in text_of(first)
    assert "dora and 1 other answered \u201cInterval\u201d" in text_of(second) and "bob" not in text_of(second)


def test_email_off_or_no_address_means_no_email(app, smtp, login_as):
    off = asker_with_email(login_as, smtp, "off", "off@example.org", mode="off")
    answer_as(login_as, ["bob"], ask(off, "Off"))
    nobody = login_as("noaddress")  # "away" by default, but no address
    answer_as(login_as, ["carl"], ask(nobody, "No address"))
    scan(app)
    assert smtp.messages == []


def test_a_hostile_title_is_escaped_in_html_and_plain_in_text(app, smtp, login_as):
    asker = asker_with_email(login_as, smtp)
    title = '<script>alert("x")</script> & <b>bold</b>'
    answer_as(login_as, ["bob"], ask(asker, title))
    scan(app)
    [message] = smtp.to(ADDRESS)
    html = html_of(message)
    assert "<script>" not in html and "<b>bold" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in html
    assert title in text_of(message)
    assert "\n" not in message["Subject"]


# -- digest -------------------------------------------------------------------------------


def test_daily_digest_lists_unread_since_the_last_one_and_nothing_new_sends_nothing(app, smtp, login_as):
    reader = asker_with_email(login_as, smtp, "reader", "reader@example.org", mode="digest")
    qid = ask(reader, "Digest me")
    answer_as(login_as, ["bob", "carl"], qid)
    with app.app_context():  # the answers came in over the day, before the digest's settle minute
        db.session.execute(
            update(Notification)
            .where(Notification.user_id == reader.user_id)
            .values(created_at=utcnow() - timedelta(hours=3))
        )
        db.session.commit()
    scan(app)  # the away scan leaves digest users alone
    assert smtp.messages == []

    send_digests(app)
    [message] = smtp.to("reader@example.org")
    assert message["Subject"] == "Your daily digest: 1 update"
    text = text_of(message)
    assert "your daily digest: 2 unread notifications" in text
    assert "carl and 1 other answered \u201cDigest me\u201d" in text
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    send_digests(app)  # the next day, nothing new: no email
    assert len(smtp.to("reader@example.org")) == 1
    assert emails_recorded(app) == [("digest", "sent", 2)]


def test_digest_of_ten_thousand_unread_is_one_bounded_email(app, smtp, login_as):
    reader = asker_with_email(login_as, smtp, "reader", "reader@example.org", mode="digest")
    when = utcnow() - timedelta(hours=2)
    with app.app_context():
        # 300 questions, 10,000 answers among them: 300 groups.
        db.session.execute(
            insert(OutboxEvent),
            [
                {
                    "event_type": "new_answers",
                    "payload": {"question_title": f"Question {i % 300}", "author": f"user{i}", "url": f"/q/{i % 300}"},
                    "audience": {"kind": "users", "user_ids": [reader.user_id]},
                    "group_key": f"new_answers:question:{i % 300}",
                    "actor_id": None,
                    "created_at": when,
                    "delivered_at": when,
                }
                for i in range(10_000)
            ],
        )
        ids = db.session.scalars(select(OutboxEvent.id)).all()
        db.session.execute(
            insert(Notification), [{"user_id": reader.user_id, "outbox_id": i, "created_at": when} for i in ids]
        )
        db.session.commit()
    started = time.monotonic()
    send_digests(app)
    took = time.monotonic() - started
    [message] = smtp.to("reader@example.org")
    text = text_of(message)
    assert "10000 unread notifications" in text
    assert text.count("\n* ") == 50 and "...and 250 more in your inbox." in text
    assert len(message.as_bytes()) < 100_000
    assert emails_recorded(app) == [("digest", "sent", 10_000)]
    assert unemailed(app, reader.user_id) == 0
    # Not a benchmark: a guard against loading the 10,000 rows one by one (that takes minutes).
    assert took < 30, f"digest of 10,000 took {took:.1f} s"


# -- unsubscribe --------------------------------------------------------------------------


def _emailed_asker(app, smtp, login_as):
    asker = asker_with_email(login_as, smtp)
    answer_as(login_as, ["bob"], ask(asker, "Unsubscribe"))
    scan(app)
    [message] = smtp.to(ADDRESS)
    return asker, unsubscribe_path(message)


def test_unsubscribe_link_works_without_login_and_get_changes_nothing(app, smtp, login_as, api):
    asker, path = _emailed_asker(app, smtp, login_as)
    page = api.client.get(path)  # anonymous: a mail scanner, or the user in another browser
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    assert "Stop notification emails?" in body and ">Unsubscribe</button>" in body
    assert user_row(app, asker.user_id).email_mode == "away", "a GET must not unsubscribe"

    done = api.client.post(path)  # the button: no session, no CSRF token
    assert done.status_code == 200 and "You are unsubscribed" in done.get_data(as_text=True)
    assert user_row(app, asker.user_id).email_mode == "off"
    assert asker.get("/api/preferences").get_json()["email_mode"] == "off"


def test_one_click_post_from_the_mail_provider_unsubscribes(app, smtp, login_as, api):
    asker, path = _emailed_asker(app, smtp, login_as)
    resp = api.client.post(path, data="List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded")
    assert resp.status_code == 200
    assert user_row(app, asker.user_id).email_mode == "off"
    answer_as(login_as, ["carl"], asker.get("/api/notifications").get_json()["items"][0]["payload"]["question_id"])
    with app.app_context():
        db.session.execute(update(User).values(last_emailed_at=None))
        db.session.commit()
    scan(app)
    assert len(smtp.to(ADDRESS)) == 1, "unsubscribed, yet emailed again"


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_tampered_token_is_refused_with_a_clear_page(app, smtp, login_as, api, method):
    asker, path = _emailed_asker(app, smtp, login_as)
    token = path.rsplit("/", 1)[1]
    for bad in (token[:-2] + ("AA" if not token.endswith("AA") else "BB"), "x" * 1000, "nonsense", token + "."):
        resp = api.client.open(f"/email/unsubscribe/{bad}", method=method)
        assert resp.status_code == 400
        assert "This unsubscribe link is not valid" in resp.get_data(as_text=True)
    assert user_row(app, asker.user_id).email_mode == "away"


def test_an_expired_token_is_refused(app, smtp, login_as, api):
    asker, path = _emailed_asker(app, smtp, login_as)
    app.config["EMAIL_UNSUBSCRIBE_MAX_AGE"] = -1
    resp = api.client.post(path)
    assert resp.status_code == 400 and "has expired" in resp.get_data(as_text=True)
    assert user_row(app, asker.user_id).email_mode == "away"


# -- the mail server failing --------------------------------------------------------------


def test_smtp_server_down_the_email_waits_and_goes_once_it_is_back(app, smtp, login_as, caplog):
    smtp.stop()  # nothing listens on MAIL_PORT any more
    asker = asker_with_email(login_as, smtp)
    answer_as(login_as, ["bob", "carl"], ask(asker, "Server down"))
    with caplog.at_level(logging.WARNING):
        scan(app)
    assert emails_recorded(app) == [], "a reservation for an email that never left"
    assert unemailed(app, asker.user_id) == 2
    assert any("email to user" in r.message and "waits" in r.message for r in caplog.records)
    user = user_row(app, asker.user_id)
    assert user.email_failures == 1 and user.email_retry_at is not None

    scan(app)  # still backing off: not even tried
    assert user_row(app, asker.user_id).email_failures == 1
    restarted = SMTPSink(smtp.port).start()
    try:
        time.sleep(0.5)  # the first backoff (2 x EMAIL_SCAN_SECONDS) passes
        scan(app)
        [message] = restarted.to(ADDRESS)
        assert "carl and 1 other answered \u201cServer down\u201d" in text_of(message)
        scan(app)
        assert len(restarted.messages) == 1
    finally:
        restarted.stop()
    assert emails_recorded(app) == [("away", "sent", 2)]
    assert user_row(app, asker.user_id).email_failures == 0


def test_a_refused_recipient_waits_while_other_users_emails_go(app, smtp, login_as):
    asker = asker_with_email(login_as, smtp)
    other = asker_with_email(login_as, smtp, "other", "other@example.org")
    answer_as(login_as, ["bob"], ask(asker, "Refused"))
    answer_as(login_as, ["carl"], ask(other, "Accepted"))
    smtp.refuse.add(ADDRESS)  # 451 to RCPT TO: the server took nothing
    scan(app)
    assert smtp.to(ADDRESS) == []
    [message] = smtp.to("other@example.org")
    assert "carl answered" in text_of(message)
    assert unemailed(app, asker.user_id) == 1
    smtp.refuse.clear()
    time.sleep(0.5)
    scan(app)
    assert len(smtp.to(ADDRESS)) == 1 and len(smtp.to("other@example.org")) == 1


def test_a_connection_lost_after_the_data_is_never_resent(app, smtp, login_as, caplog):
    asker = asker_with_email(login_as, smtp)
    qid = ask(asker, "Lost reply")
    answer_as(login_as, ["bob"], qid)
    smtp.hang_up = True  # the server keeps the message and hangs up before replying
    with caplog.at_level(logging.ERROR):
        scan(app)
    assert len(smtp.to(ADDRESS)) == 1
    assert any("may or may not have gone" in r.message for r in caplog.records)
    assert emails_recorded(app) == [("away", "sending", 1)]
    smtp.hang_up = False
    with app.app_context():  # well past the minimum interval
        db.session.execute(update(User).values(last_emailed_at=utcnow() - timedelta(hours=2)))
        db.session.commit()
    answer_as(login_as, ["carl"], qid)
    scan(app)
    first, second = smtp.to(ADDRESS)
    assert "carl answered" in text_of(second) and "bob" not in text_of(second), "bob's answer was emailed twice"


@pytest.mark.parametrize(
    "mail_settings, problem",
    [
        ({"MAIL_SERVER": "smtp://mail.example.org", "MAIL_PORT": "25"}, "MAIL_SERVER 'smtp://mail.example.org'"),
        ({"MAIL_SERVER": "127.0.0.1", "MAIL_PORT": "twenty-five"}, "MAIL_PORT 'twenty-five' is not a port"),
    ],
)
def test_malformed_mail_settings_are_one_clear_line_and_the_email_waits(app, smtp, login_as, caplog, problem):
    asker = asker_with_email(login_as, smtp)
    caplog.clear()  # the confirmation email could not go either: its line is not the scan's
    answer_as(login_as, ["bob"], ask(asker, "Malformed"))
    with caplog.at_level(logging.ERROR):
        assert scan(app) == 0
        assert scan(app) == 0
    lines = [r.message for r in caplog.records if problem in r.message]
    assert len(lines) == 1 and "no email is sent until it is fixed" in lines[0]
    assert unemailed(app, asker.user_id) == 1 and emails_recorded(app) == []
    # A task handed the user anyway (settings changed under it) fails cleanly and backs off.
    with app.app_context():
        outcome = app.extensions["celery"].tasks["workers.email_users"].apply(args=["away", [asker.user_id]]).get()
    assert outcome == {"failed": 1}
    assert unemailed(app, asker.user_id) == 1 and emails_recorded(app) == []
    assert asker.get("/preferences").status_code == 200


@pytest.mark.parametrize("mail_settings", [{"MAIL_SERVER": None}])
def test_without_mail_server_each_email_is_an_eml_file_and_its_path_is_logged(app, smtp, login_as, tmp_path, caplog):
    asker = asker_with_email(login_as, smtp)
    [confirmation] = (tmp_path / "mail").glob("*.eml")  # the address's confirmation, a file too
    confirmation.unlink()
    answer_as(login_as, ["bob"], ask(asker, "To a file"))
    with caplog.at_level(logging.WARNING):
        scan(app)
    [path] = (tmp_path / "mail").glob("*.eml")
    assert any(str(path) in r.message for r in caplog.records)
    message = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert message["To"] == ADDRESS and message["Subject"] == "bob answered \u201cTo a file\u201d"
    assert "bob answered" in text_of(message) and "bob answered" in html_of(message)
    assert emails_recorded(app) == [("away", "sent", 1)]


def test_an_email_left_sending_is_abandoned_after_the_grace_period_never_resent(app, smtp, login_as):
    asker = asker_with_email(login_as, smtp)
    answer_as(login_as, ["bob"], ask(asker, "Abandoned"))
    with app.app_context():  # what a worker killed mid-send leaves behind
        user = db.session.get(User, asker.user_id)
        from qa_notify.mail import sending

        row = sending.reserve(user, "away", [Notification.user_id == asker.user_id], email_checked_until=utcnow())
        db.session.execute(update(User).values(last_emailed_at=None))
        db.session.execute(
            update(EmailMessage).values(
                created_at=utcnow() - timedelta(seconds=app.config["EMAIL_SENDING_GRACE_SECONDS"] + 1)
            )
        )
        db.session.commit()
        assert row is not None
    metrics = app.test_client().get("/metrics").get_data(as_text=True)
    assert "qa_notify_emails_sending 1" in metrics and "qa_notify_emails_abandoned 0" in metrics
    scan(app)
    assert smtp.messages == []
    assert emails_recorded(app) == [("away", "abandoned", 1)]
    # Operators see it: an email that may have been lost.
    metrics = app.test_client().get("/metrics").get_data(as_text=True)
    assert "qa_notify_emails_sending 0" in metrics and "qa_notify_emails_abandoned 1" in metrics


# -- preferences --------------------------------------------------------------------------


def test_preferences_api_email_fields_are_optional_and_validated(login_as):
    client = login_as("prefs")
    prefs = client.get("/api/preferences").get_json()
    assert prefs["email"] is None and prefs["email_mode"] == "away"
    assert prefs["email_modes"] == ["off", "away", "digest"]
    assert client.put("/api/preferences", {"muted": ["broadcast"]}).get_json()["muted"] == ["broadcast"]
    saved = client.put("/api/preferences", {"email": " Prefs@Example.ORG ", "email_mode": "digest"}).get_json()
    assert (saved["email"], saved["email_mode"], saved["muted"]) == ("Prefs@example.org", "digest", ["broadcast"])
    for body, message in [
        ({"email": "not an address"}, "not an email address"),
        ({"email": "a@b.c" + "x" * 300}, "at most 254"),
        ({"email": 5}, "'email' must be"),
        ({"email_mode": "hourly"}, "'email_mode' must be one of off, away, digest"),
        ({"email_mode": "off", "muted": ["nonsense"]}, "cannot mute nonsense"),
        ({}, "'muted' is required"),
    ]:
        resp = client.put("/api/preferences", body)
        assert resp.status_code == 422 and message in resp.get_json()["error"], (body, resp.get_json())
    assert client.get("/api/preferences").get_json()["email_mode"] == "digest", "a refused PUT changed something"
    assert client.put("/api/preferences", {"email": None}).get_json()["email"] is None


def test_preferences_page_saves_the_email_settings(login_as):
    client = login_as("pageprefs")
    page = client.client.get("/preferences").get_data(as_text=True)
    assert re.search(r'<input checked[^>]*name="email_mode" type="radio" value="away">', page), "away is the default"
    token = re.search(r'id="email-notifications".*?name="csrf_token" type="hidden" value="([^"]+)"', page, re.S)[1]
    resp = client.client.post(
        "/preferences/email", data={"csrf_token": token, "email": "page@example.org", "email_mode": "digest"}
    )
    assert resp.status_code == 302
    page = client.client.get("/preferences").get_data(as_text=True)
    assert "We sent a link to page@example.org: open it to confirm the address" in page
    assert 'id="email-unconfirmed"' in page
    bad = client.client.post("/preferences/email", data={"csrf_token": token, "email": "nope", "email_mode": "away"})
    assert bad.status_code == 422 and "not an email address" in bad.get_data(as_text=True)
    prefs = client.get("/api/preferences").get_json()
    assert (prefs["email"], prefs["email_mode"]) == ("page@example.org", "digest")


def test_a_new_address_does_not_email_the_old_backlog(app, smtp, login_as):
    asker = login_as("late")
    answer_as(login_as, ["bob"], ask(asker, "Before the address"))
    assert asker.put("/api/preferences", {"email": "late@example.org"}).status_code == 200
    confirm_address(app.test_client(), smtp, "late@example.org")
    scan(app)
    assert smtp.messages == []


def test_an_address_can_be_given_at_sign_up(app, smtp, api):
    refused = api.post("/api/register", {"username": "newbie", "password": "long-enough-1", "email": "no at sign"})
    assert refused.status_code == 422 and "not an email address" in refused.get_json()["error"]
    created = api.post("/api/register", {"username": "newbie", "password": "long-enough-1", "email": "New@Example.org"})
    assert created.status_code == 201
    prefs = api.get("/api/preferences").get_json()
    assert (prefs["email"], prefs["email_mode"], prefs["email_verified"]) == ("New@example.org", "away", False)
    [confirmation] = smtp.to("New@example.org")  # the address is confirmed from its mailbox first
    assert confirmation["Subject"] == "Confirm your email address for qa_notify"


def test_the_register_page_takes_an_optional_address(app, api):
    page = api.client.get("/register").get_data(as_text=True)
    assert 'type="email"' in page and "Email (optional)" in page
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)[1]
    form = {"csrf_token": token, "username": "formuser", "password": "long-enough-1", "confirm": "long-enough-1"}
    assert api.client.post("/register", data={**form, "email": "form@example.org"}).status_code == 302
    assert api.get("/api/preferences").get_json()["email"] == "form@example.org"


# -- confirming an address ----------------------------------------------------------------


def test_a_new_address_is_emailed_only_once_confirmed(app, smtp, login_as):
    asker = login_as("asker")
    saved = asker.put("/api/preferences", {"email": ADDRESS}).get_json()
    assert saved["email"] == ADDRESS and saved["email_verified"] is False
    [confirmation] = smtp.to(ADDRESS)
    assert confirmation["Subject"] == "Confirm your email address for qa_notify"
    answer_as(login_as, ["bob"], ask(asker, "Not yet"))
    scan(app)
    assert smtp.to(ADDRESS) == [confirmation], "a notification email went to an unconfirmed address"
    # The owner opens the link: a GET shows a button and confirms nothing (mail scanners fetch links).
    link = re.search(r"https?://\S+/email/confirm/\S+", text_of(confirmation)).group(0)
    path = "/" + link.split("/", 3)[3]
    anonymous = app.test_client()
    page = anonymous.get(path)
    assert page.status_code == 200 and "Confirm your email address" in page.get_data(as_text=True)
    assert asker.get("/api/preferences").get_json()["email_verified"] is False
    confirm_address(anonymous, smtp, ADDRESS)
    assert asker.get("/api/preferences").get_json()["email_verified"] is True
    scan(app)
    [email] = smtp.to(ADDRESS)
    assert email["Subject"] == "bob answered \u201cNot yet\u201d"


def test_a_confirmation_link_is_refused_when_tampered_or_for_an_old_address(app, smtp, login_as):
    asker = login_as("asker")
    asker.put("/api/preferences", {"email": "old@example.org"})
    [old] = smtp.to("old@example.org")
    old_path = "/" + re.search(r"https?://\S+/email/confirm/\S+", text_of(old)).group(0).split("/", 3)[3]
    client = app.test_client()
    tampered = client.post(old_path[:-3] + "abc")
    assert tampered.status_code == 400 and "not valid" in tampered.get_data(as_text=True)
    asker.put("/api/preferences", {"email": "new@example.org"})
    stale = client.post(old_path)
    assert stale.status_code == 400 and "no longer on the account" in stale.get_data(as_text=True)
    assert asker.get("/api/preferences").get_json()["email_verified"] is False
    # Changing a confirmed address makes the new one unconfirmed again.
    confirm_address(client, smtp, "new@example.org")
    assert asker.get("/api/preferences").get_json()["email_verified"] is True
    asker.put("/api/preferences", {"email": "third@example.org"})
    assert asker.get("/api/preferences").get_json()["email_verified"] is False

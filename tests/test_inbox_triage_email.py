"""Inbox triage and email: what archive, mark unread and viewing a question mean for the away
email (the rules are in ``qa_notify.notifications.triage``; email in ``qa_notify.mail.scan``)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from qa_notify.extensions import db
from qa_notify.models import User, utcnow

# The email suite's settings (a real SMTP server in the test process, away emails at once).
from .test_email import ADDRESS, answer_as, app_config, ask, asker_with_email, mail_settings, scan  # noqa: F401


def item_ids(client) -> list[int]:
    return [item["id"] for item in client.get("/api/notifications").get_json()["items"]]


def test_an_archived_notification_is_not_emailed(app, smtp, login_as):
    asker = asker_with_email(login_as, smtp)
    answer_as(login_as, ["bob"], ask(asker, "Done with it"))
    assert asker.post("/api/notifications/archive", {"ids": item_ids(asker)}).status_code == 200
    scan(app)
    assert smtp.to(ADDRESS) == []


def test_viewing_the_question_before_the_scan_means_no_email(app, smtp, login_as):
    asker = asker_with_email(login_as, smtp)
    qid = ask(asker, "Seen it")
    answer_as(login_as, ["bob"], qid)
    assert asker.client.get(f"/questions/{qid}").status_code == 200
    scan(app)
    assert smtp.to(ADDRESS) == []


def test_a_notification_marked_unread_after_its_email_is_not_emailed_again(app, smtp, login_as):
    asker = asker_with_email(login_as, smtp)
    answer_as(login_as, ["bob"], ask(asker, "Told once"))
    scan(app)
    assert len(smtp.to(ADDRESS)) == 1
    ids = item_ids(asker)
    asker.post("/api/notifications/read", {"ids": ids})
    assert asker.post("/api/notifications/unread", {"ids": ids}).get_json()["unread_count"] == 1
    with app.app_context():  # the minimum interval has passed
        db.session.execute(
            update(User).where(User.id == asker.user_id).values(last_emailed_at=utcnow() - timedelta(hours=2))
        )
        db.session.commit()
    scan(app)
    assert len(smtp.to(ADDRESS)) == 1

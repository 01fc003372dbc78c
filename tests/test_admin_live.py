"""The admin's live page and its JSON: the figures it shows, and that they follow the site.

(Who may see them: tests/test_access.py. The page in a browser, numbers moving:
tests/browser/test_admin_live.py.)
"""

from __future__ import annotations

from datetime import timedelta

from qa_notify.extensions import db
from qa_notify.models import OutboxEvent, utcnow


def test_the_page_loads_its_script_and_no_inline_one(login_as):
    admin = login_as("root", "admin")
    page = admin.get("/admin/live")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert '<script src="/static/js/admin-live.js"' in html and 'data-url="/api/admin/live"' in html
    assert "<script>" not in html
    assert 'href="/admin/live"' in admin.get("/admin").get_data(as_text=True)


def test_the_figures_follow_posts_and_the_backlog(app, login_as):
    admin = login_as("root", "admin")
    first = admin.get("/api/admin/live").get_json()
    assert first["machine"] and first["at"] > 0
    assert first["open_streams"] == sum(p["open_streams"] for p in first["processes"])
    assert first["outbox"] == {"undelivered": 0, "oldest_age_seconds": 0, "failed": 0}
    assert first["dead_letters"] == 0 and first["emails"] == {"sending": 0, "retrying": 0, "abandoned": 0}
    latency = first["latency"]["outbox_to_redis"]
    assert latency["le"][-1] == "+Inf" and 0.5 in latency["le"] and len(latency["counts"]) == len(latency["le"])

    asker, bob = login_as("ann"), login_as("bob")
    qid = asker.post("/api/questions", {"title": "Live?"}).get_json()["id"]
    assert bob.post(f"/api/questions/{qid}/answers", {"body": "yes"}).status_code == 201
    with app.app_context():  # and an event the broker never got, two minutes ago
        db.session.add(
            OutboxEvent(
                event_type="broadcast",
                payload={"message": "stuck"},
                audience={"kind": "users", "user_ids": []},
                created_at=utcnow() - timedelta(minutes=2),
            )
        )
        db.session.commit()
    later = admin.get("/api/admin/live").get_json()
    assert later["events"]["pushed"] == first["events"]["pushed"] + 1  # ann, told of bob's answer
    assert later["latency"]["outbox_to_redis"]["counts"][-1] == latency["counts"][-1] + 1
    assert later["outbox"]["undelivered"] == 1 and 120 <= later["outbox"]["oldest_age_seconds"] < 180
    assert later["at"] >= first["at"]

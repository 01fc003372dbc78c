"""An outbox event that cannot be delivered is tried a few times, then set aside, never forever.

The rows here are written straight into the outbox, as an older release or a bug could
have written them; the rows behind them must still be delivered.
"""

from __future__ import annotations

from sqlalchemy import func, select

from qa_notify.events import channels
from qa_notify.events.types import CustomEvent
from qa_notify.extensions import db
from qa_notify.models import Notification, OutboxEvent


def relay(app) -> int:
    return app.extensions["celery"].tasks["workers.relay_outbox"].apply().get()


def write_outbox(app, audience: dict, text: str) -> int:
    with app.app_context():
        row = OutboxEvent(
            event_type="deploy", payload=CustomEvent("deploy", {"text": text}).payload(), audience=audience
        )
        db.session.add(row)
        db.session.commit()  # no after-commit enqueue: only emit() registers one
        return row.id


def metric(client, name: str) -> float:
    for line in client.get("/metrics").get_data(as_text=True).splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


def test_a_poison_event_is_marked_failed_and_never_holds_up_the_others(app, r, make_user, api):
    alice = make_user("alice")
    app.config.update(OUTBOX_RELAY_AGE_SECONDS=0, OUTBOX_MAX_FAILURES=3)
    poison = write_outbox(app, {"kind": "followers_of_the_moon"}, "never")
    good = write_outbox(app, {"kind": "users", "user_ids": [alice.id]}, "first")

    relay(app)  # one pass: the poison fails once, the good one is delivered
    assert [f["t"] for _, f in r.xrange(channels.user_stream(alice.id))] == ["deploy"]
    with app.app_context():
        assert db.session.get(OutboxEvent, good).delivered_at is not None
        row = db.session.get(OutboxEvent, poison)
        assert row.failures == 1 and row.failed_at is None and "followers_of_the_moon" in row.last_error
    assert metric(api, "qa_notify_outbox_undelivered") == 1 and metric(api, "qa_notify_outbox_failed") == 0

    assert relay(app) == 1 and relay(app) == 1  # the third failure marks it failed
    with app.app_context():
        row = db.session.get(OutboxEvent, poison)
        assert row.failures == 3 and row.failed_at is not None and row.delivered_at is None
    assert relay(app) == 0  # set aside: the relay no longer picks it up
    assert metric(api, "qa_notify_outbox_failed") == 1 and metric(api, "qa_notify_outbox_undelivered") == 0

    later = write_outbox(app, {"kind": "users", "user_ids": [alice.id]}, "second")
    assert relay(app) == 1
    with app.app_context():
        assert db.session.get(OutboxEvent, later).delivered_at is not None
        assert db.session.scalar(select(func.count()).select_from(Notification)) == 2


def test_admins_see_failed_deliveries_and_retry_them_once_fixed(app, r, make_user, login_as):
    alice = make_user("alice")
    admin = login_as("root", role="admin")
    app.config.update(OUTBOX_RELAY_AGE_SECONDS=0, OUTBOX_MAX_FAILURES=1)
    poison = write_outbox(app, {"kind": "<script>alert(1)</script>"}, "held")
    relay(app)
    failed = admin.get("/api/admin/deliveries/failed").get_json()["failed"]
    assert [(f["id"], f["failures"]) for f in failed] == [(poison, 1)] and "unknown audience" in failed[0]["last_error"]
    page = admin.get("/admin/deliveries").get_data(as_text=True)
    assert f'id="failed-{poison}"' in page and "&lt;script&gt;" in page and "<script>alert" not in page

    with app.app_context():  # the cause is fixed (say, a release that knows this audience)
        db.session.get(OutboxEvent, poison).audience = {"kind": "users", "user_ids": [alice.id]}
        db.session.commit()
    resp = admin.client.post(f"/admin/deliveries/{poison}/retry", data={"csrf_token": admin.token()})
    assert resp.status_code == 302
    with app.app_context():
        assert db.session.get(OutboxEvent, poison).delivered_at is not None
    assert [f["t"] for _, f in r.xrange(channels.user_stream(alice.id))] == ["deploy"]
    assert admin.get("/api/admin/deliveries/failed").get_json()["failed"] == []
    assert admin.post(f"/api/admin/deliveries/{poison}/retry").status_code == 404  # not failed any more


def test_metrics_show_only_counts(app, api, r, make_user):
    make_user("alice")
    r.xadd(channels.DEAD_LETTER_STREAM, {"reason": "x", "entry_id": "1-0", "envelope": "secret payload"})
    text = api.get("/metrics").get_data(as_text=True)
    assert "qa_notify_ingest_dead_letters 1" in text
    assert "secret" not in text and "alice" not in text
    for line in text.splitlines():
        assert line.startswith("#") or float(line.split()[-1]) >= 0  # a name, labels, a number

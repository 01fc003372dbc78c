"""The event pipeline: who is told, exactly once, durably (outbox -> Celery -> inbox + Redis)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import redis
from sqlalchemy import func, insert, select, update

from qa_notify import create_app
from qa_notify.events import channels, fanout
from qa_notify.extensions import db
from qa_notify.models import Notification, OutboxEvent, QuestionFollow, Topic, User, utcnow


def inbox_types(app, user_id: int) -> list[tuple[str, dict]]:
    with app.app_context():
        rows = db.session.scalars(select(Notification).where(Notification.user_id == user_id).order_by(Notification.id))
        return [(n.event_type, n.payload) for n in rows]


def stream_entries(r: redis.Redis, user_id: int) -> list[tuple[str, str, dict]]:
    return [(eid, f["t"], json.loads(f["d"])) for eid, f in r.xrange(channels.user_stream(user_id))]


def make_topic(app, name: str) -> int:
    with app.app_context():
        topic = Topic(name=name)
        db.session.add(topic)
        db.session.commit()
        return topic.id


def test_new_answer_reaches_author_and_followers_but_not_answerer(app, r, login_as):
    asker, follower, answerer, stranger = (login_as(n) for n in ("asker", "follower", "answerer", "stranger"))
    qid = asker.post("/api/questions", {"title": "How do streams work?", "body": "?"}).get_json()["id"]
    assert follower.post(f"/api/questions/{qid}/follow").status_code == 200
    resp = answerer.post(f"/api/questions/{qid}/answers", {"body": "Like this:\nline two"})
    assert resp.status_code == 201

    for client in (asker, follower):
        [(etype, payload)] = inbox_types(app, client.user_id)
        assert etype == "new_answers"
        assert payload["question_id"] == qid and payload["author"] == "answerer"
        assert payload["excerpt"] == "Like this: line two"
        assert payload["url"] == f"/questions/{qid}#answer-{resp.get_json()['id']}"
        [(_, stype, data)] = stream_entries(r, client.user_id)
        assert stype == "new_answers" and data["answer_id"] == resp.get_json()["id"]
        assert data["notification_id"] > 0
    assert inbox_types(app, answerer.user_id) == []
    assert inbox_types(app, stranger.user_id) == []


def test_new_question_reaches_topic_and_author_followers_once(app, r, login_as):
    tid = make_topic(app, "redis")
    author, mod, fan, both = (
        login_as(n, role) for n, role in (("author", "user"), ("mod", "moderator"), ("fan", "user"), ("both", "user"))
    )
    assert mod.post(f"/api/topics/{tid}/follow").status_code == 200
    assert fan.post(f"/api/users/{author.user_id}/follow").status_code == 200
    assert both.post(f"/api/topics/{tid}/follow").status_code == 200
    assert both.post(f"/api/users/{author.user_id}/follow").status_code == 200

    qid = author.post("/api/questions", {"title": "Pub/sub or streams?", "body": "", "topics": ["redis"]}).get_json()[
        "id"
    ]

    for client in (mod, fan, both):
        events = inbox_types(app, client.user_id)
        assert [(t, p["question_id"], p["topics"]) for t, p in events] == [("new_question", qid, ["redis"])]
        assert len(stream_entries(r, client.user_id)) == 1
    assert inbox_types(app, author.user_id) == []


def test_muted_type_is_not_delivered(app, login_as):
    asker, muter = login_as("asker"), login_as("muter")
    qid = asker.post("/api/questions", {"title": "Q"}).get_json()["id"]
    muter.post(f"/api/questions/{qid}/follow")
    assert muter.put("/api/preferences", {"muted": ["new_answers"]}).get_json()["muted"] == ["new_answers"]
    login_as("answerer").post(f"/api/questions/{qid}/answers", {"body": "A"})
    assert inbox_types(app, muter.user_id) == []
    assert [t for t, _ in inbox_types(app, asker.user_id)] == ["new_answers"]


def test_rolled_back_question_notifies_nobody(app, r, login_as, make_user):
    from qa_notify.events.audiences import TopicAndAuthorFollowers
    from qa_notify.events.outbox import emit
    from qa_notify.events.types import NewQuestion
    from qa_notify.models import Question

    follower = login_as("follower")
    author = make_user("author")
    follower.post(f"/api/users/{author.id}/follow")
    with app.test_request_context():
        question = Question(title="Doomed", body="", author_id=author.id)
        db.session.add(question)
        db.session.flush()
        event = NewQuestion(question_id=question.id, title="Doomed", topics=[], author="author", url="/")
        emit(event, TopicAndAuthorFollowers(question.id), actor_id=author.id)
        db.session.rollback()
        # A later, unrelated commit must not send the rolled-back event either.
        db.session.add(Topic(name="unrelated"))
        db.session.commit()
        assert db.session.scalar(select(func.count()).select_from(OutboxEvent)) == 0
    assert inbox_types(app, follower.user_id) == []
    assert stream_entries(r, follower.user_id) == []


def test_broker_down_at_commit_then_relay_delivers_once(app_config, app, r, make_user):
    from qa_notify.events.outbox import emit  # noqa: F401  (the path under test)

    asker = make_user("asker")
    follower = make_user("follower")
    down = create_app({**app_config, "CELERY_ALWAYS_EAGER": False, "CELERY_BROKER_URL": "redis://127.0.0.1:1/0"})
    with down.test_request_context():
        from qa_notify.qa.service import ask_question, post_answer

        question = ask_question(db.session.get(User, asker.id), "Broker away", "", [])
        db.session.add(QuestionFollow(user_id=follower.id, question_id=question.id))
        db.session.commit()
        post_answer(db.session.get(User, follower.id), question, "answered while the broker is down")
        pending = db.session.scalar(
            select(func.count()).select_from(OutboxEvent).where(OutboxEvent.delivered_at.is_(None))
        )
        assert pending == 2
    assert inbox_types(app, asker.id) == []

    relay = app.extensions["celery"].tasks["workers.relay_outbox"]
    with app.app_context():
        db.session.execute(update(OutboxEvent).values(created_at=utcnow() - _seconds(60)))
        db.session.commit()
    relay.apply()
    relay.apply()
    assert [t for t, _ in inbox_types(app, asker.id)] == ["new_answers"]
    assert len(stream_entries(r, asker.id)) == 1


def _seconds(n: int):
    from datetime import timedelta

    return timedelta(seconds=n)


def test_same_task_twice_delivers_once(app, r, login_as):
    asker, follower = login_as("asker"), login_as("follower")
    qid = asker.post("/api/questions", {"title": "Twice?"}).get_json()["id"]
    follower.post(f"/api/questions/{qid}/follow")
    login_as("answerer").post(f"/api/questions/{qid}/answers", {"body": "once"})
    task = app.extensions["celery"].tasks["workers.fan_out_event"]
    with app.app_context():
        outbox_id = db.session.scalar(select(OutboxEvent.id).where(OutboxEvent.event_type == "new_answers"))
        # Pretend the first run died before marking the row delivered.
        db.session.execute(update(OutboxEvent).values(delivered_at=None))
        db.session.commit()
    task.apply(args=[outbox_id])
    task.apply(args=[outbox_id])
    for client in (asker, follower):
        assert len(inbox_types(app, client.user_id)) == 1
        assert len(stream_entries(r, client.user_id)) == 1


def test_split_batches_done_before_the_dispatch_ends_mark_the_row_delivered_once(app, r, login_as, monkeypatch):
    """Batches are queued as they are read: here each runs at once, before the next is read,
    so the dispatcher's own count is the last one and it marks the row delivered."""
    asker = login_as("asker")
    qid = asker.post("/api/questions", {"title": "Popular"}).get_json()["id"]
    followers = [login_as(f"f{i}") for i in range(5)]
    for client in followers:
        client.post(f"/api/questions/{qid}/follow")
    app.config["FANOUT_BATCH_SIZE"] = 2
    # The answer's event waits in the outbox (no drain is enqueued) for the test to fan out.
    monkeypatch.setitem(app.extensions, "jobs", replace(app.extensions["jobs"], drain_outbox=lambda: None))
    login_as("answerer").post(f"/api/questions/{qid}/answers", {"body": "read in pages"})
    batch = app.extensions["celery"].tasks["workers.fan_out_batch"]
    ran: list[bool] = []

    def run_now(outbox_id: int, user_ids: list[int]) -> None:
        batch.apply(args=[outbox_id, user_ids]).get()
        with app.app_context():
            ran.append(db.session.get(OutboxEvent, outbox_id).delivered_at is None)

    with app.app_context():
        outbox_id = db.session.scalar(select(OutboxEvent.id).where(OutboxEvent.event_type == "new_answers"))
        assert fanout.fan_out(outbox_id, enqueue_batch=run_now) == 6
        assert db.session.get(OutboxEvent, outbox_id).delivered_at is not None
        assert not r.exists(channels.outbox_progress(outbox_id))
    assert ran == [True, True, True]  # no batch took itself for the last one
    for client in [asker, *followers]:
        assert len(inbox_types(app, client.user_id)) == 1
        assert len(stream_entries(r, client.user_id)) == 1


def test_ten_thousand_followers_all_reached(app, r, login_as):
    asker = login_as("asker")
    qid = asker.post("/api/questions", {"title": "Popular"}).get_json()["id"]
    with app.app_context():
        db.session.execute(
            insert(User),
            [{"username": f"f{i}", "password_hash": "x", "role": "user"} for i in range(10_000)],
        )
        ids = db.session.scalars(select(User.id).where(User.username.like("f%"))).all()
        db.session.execute(insert(QuestionFollow), [{"user_id": i, "question_id": qid} for i in ids])
        db.session.commit()
    login_as("answerer").post(f"/api/questions/{qid}/answers", {"body": "for everyone"})
    with app.app_context():
        reached = db.session.scalar(select(func.count()).select_from(Notification))
    assert reached == 10_001  # the followers and the asker
    assert r.xlen(channels.user_stream(ids[0])) == 1
    assert r.xlen(channels.user_stream(ids[-1])) == 1


def test_mark_read_updates_count_and_tells_other_tabs(app, r, login_as):
    asker = login_as("asker")
    qids = [asker.post("/api/questions", {"title": f"Read me {i}"}).get_json()["id"] for i in range(3)]
    answerer = login_as("answerer")
    for qid in qids:
        answerer.post(f"/api/questions/{qid}/answers", {"body": f"answer to {qid}"})
    inbox = asker.get("/api/notifications").get_json()
    assert inbox["unread_count"] == 3
    newest = inbox["items"][0]["id"]
    resp = asker.post("/api/notifications/read", {"ids": [newest]})
    assert resp.get_json() == {"marked": [newest], "unread_count": 2}
    *_, (_, etype, data) = stream_entries(r, asker.user_id)
    assert etype == "read" and data["ids"] == [newest] and data["unread_count"] == 2
    assert asker.post("/api/notifications/read", {"all": True}).get_json()["unread_count"] == 0
    assert asker.get("/api/notifications/unread_count").get_json() == {"unread_count": 0}


def test_inbox_pages_newest_first(app, login_as):
    asker = login_as("asker")
    qids = [asker.post("/api/questions", {"title": f"Paging {i}"}).get_json()["id"] for i in range(5)]
    answerer = login_as("answerer")
    for i, qid in enumerate(qids):
        answerer.post(f"/api/questions/{qid}/answers", {"body": f"answer {i}"})
    first = asker.get("/api/notifications?limit=2").get_json()["items"]
    assert [i["payload"]["excerpt"] for i in first] == ["answer 4", "answer 3"]
    rest = asker.get(f"/api/notifications?limit=10&before={first[-1]['id']}").get_json()["items"]
    assert [i["payload"]["excerpt"] for i in rest] == ["answer 2", "answer 1", "answer 0"]


def test_admin_broadcast_reaches_role_and_counts_reach(app, login_as):
    admin = login_as("root", "admin")
    mod, user = login_as("mod", "moderator"), login_as("member")
    resp = admin.post("/api/admin/broadcast", {"message": "Moderators: new rules", "role": "moderator"})
    assert resp.status_code == 202
    bid = resp.get_json()["broadcast_id"]
    assert [(t, p["message"]) for t, p in inbox_types(app, mod.user_id)] == [("broadcast", "Moderators: new rules")]
    assert inbox_types(app, user.user_id) == []
    everyone = admin.post("/api/admin/broadcast", {"message": "Hello all"}).get_json()["broadcast_id"]
    history = {b["id"]: b for b in admin.get("/api/admin/broadcasts").get_json()["broadcasts"]}
    assert history[bid]["reached"] == 1
    assert history[everyone]["reached"] == 2  # everyone but the admin who sent it


@pytest.mark.parametrize(
    "body, status",
    [
        ({"message": ""}, 422),
        ({"message": "x" * 1001}, 422),
        ({"message": "hi", "role": "king"}, 422),
        ({}, 422),
    ],
)
def test_bad_broadcasts_are_refused(login_as, body, status):
    admin = login_as("root", "admin")
    resp = admin.post("/api/admin/broadcast", body)
    assert resp.status_code == status and "error" in resp.get_json()


def test_external_producer_envelope_is_delivered_and_bad_ones_dead_lettered(app, r, make_user):
    alice = make_user("alice")
    r.xadd(
        channels.INGEST_STREAM,
        {"envelope": json.dumps({"user": "alice", "type": "deploy", "payload": {"text": "v2 is out"}})},
    )
    r.xadd(channels.INGEST_STREAM, {"envelope": "{not json"})
    r.xadd(channels.INGEST_STREAM, {"envelope": json.dumps({"user": "nobody", "type": "deploy"})})
    r.xadd(channels.INGEST_STREAM, {"envelope": json.dumps({"user": "alice", "type": "server_closed"})})
    r.xadd(channels.INGEST_STREAM, {"other": "field"})
    accepted = app.extensions["celery"].tasks["workers.ingest_external"].apply().get()
    assert accepted == 1
    assert [(t, p["text"]) for t, p in inbox_types(app, alice.id)] == [("deploy", "v2 is out")]
    dead = [f["reason"] for _, f in r.xrange(channels.DEAD_LETTER_STREAM)]
    assert len(dead) == 4
    assert any("not JSON" in d for d in dead) and any("no such user" in d for d in dead)
    assert any("reserved" in d for d in dead) and any("no 'envelope'" in d for d in dead)
    # Everything was acknowledged: a second pass accepts nothing new.
    assert app.extensions["celery"].tasks["workers.ingest_external"].apply().get() == 0


def broadcast_entries(r: redis.Redis) -> list[tuple[str, dict]]:
    return [(eid, fields) for eid, fields in r.xrange(channels.broadcast_stream())]


@pytest.mark.parametrize("inbox_batch", [20_000, 2])  # one INSERT ... SELECT, or keyset batches of 2 users
def test_a_broadcast_is_written_once_and_gives_each_recipient_one_inbox_row(app, r, login_as, monkeypatch, inbox_batch):
    monkeypatch.setattr("qa_notify.events.broadcast.INBOX_BATCH", inbox_batch)
    admin = login_as("root", "admin")
    members = [login_as(f"member{i}") for i in range(5)]
    quiet = login_as("quiet")
    assert quiet.put("/api/preferences", {"muted": ["broadcast"]}).status_code == 200
    bid = admin.post("/api/admin/broadcast", {"message": "Once for all"}).get_json()["broadcast_id"]
    [(_, fields)] = broadcast_entries(r)  # one entry for everyone...
    assert (fields["t"], fields["r"], fields["a"]) == ("broadcast", "", str(admin.user_id))
    assert json.loads(fields["d"])["message"] == "Once for all" and "notification_id" not in json.loads(fields["d"])
    for member in members:  # ...and one inbox row each, nothing in their own streams
        assert [(t, p["message"]) for t, p in inbox_types(app, member.user_id)] == [("broadcast", "Once for all")]
        assert stream_entries(r, member.user_id) == []
    assert inbox_types(app, quiet.user_id) == [] and inbox_types(app, admin.user_id) == []
    history = {b["id"]: b for b in admin.get("/api/admin/broadcasts").get_json()["broadcasts"]}
    assert history[bid]["reached"] == 5


def test_a_broadcast_delivered_again_publishes_nothing_twice(app, r, login_as):
    from qa_notify.events import fanout
    from qa_notify.models import Broadcast

    admin, members = login_as("root", "admin"), [login_as("ann"), login_as("ben")]
    admin.post("/api/admin/broadcast", {"message": "Only once", "role": "user"})
    with app.app_context():
        outbox_id = db.session.scalar(select(Broadcast.outbox_id))
        for _ in range(2):  # a worker that died after the publish, or a task delivered twice
            db.session.execute(update(OutboxEvent).where(OutboxEvent.id == outbox_id).values(delivered_at=None))
            db.session.commit()
            assert fanout.fan_out(outbox_id) == 0  # no inbox row added
        assert db.session.get(OutboxEvent, outbox_id).delivered_at is not None
    assert len(broadcast_entries(r)) == 1
    for member in members:
        assert len(inbox_types(app, member.user_id)) == 1

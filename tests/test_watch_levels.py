"""Watch levels per question and topic (issue 18): watching, normal, muted, through the real fan-out.

Every event goes the way production sends it: the outbox, the drain task (many small events
at once), the fan-out task split into batch tasks for a large audience; what a user would
notice is checked in their inbox and in their Redis stream (what their page is sent).
"""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
import redis
from sqlalchemy import event, insert, select

from qa_notify.events import channels, fanout
from qa_notify.events.audiences import QuestionFollowers
from qa_notify.events.recipients import recipient_batches
from qa_notify.extensions import db
from qa_notify.models import Notification, OutboxEvent, User

from .test_pipeline import make_topic


def task(app, name: str):
    return app.extensions["celery"].tasks[f"workers.{name}"]


def hold_deliveries(app, monkeypatch) -> None:
    """Events wait in the outbox (no drain is enqueued) until a test drains them itself."""
    monkeypatch.setitem(app.extensions, "jobs", replace(app.extensions["jobs"], drain_outbox=lambda: None))


def told(app, r: redis.Redis, user_id: int) -> list[tuple[str, int]]:
    """(type, question id) of each notification in the user's inbox; their stream must say the same."""
    with app.app_context():
        rows = db.session.scalars(select(Notification).where(Notification.user_id == user_id).order_by(Notification.id))
        inbox = [(n.event_type, n.payload["question_id"]) for n in rows]
    stream = [(f["t"], json.loads(f["d"])["question_id"]) for _, f in r.xrange(channels.user_stream(user_id))]
    assert stream == inbox
    return inbox


def ask(client, title: str, topics: tuple[str, ...] = ()) -> int:
    resp = client.post("/api/questions", {"title": title, "topics": list(topics)})
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()["id"]


def answer(client, question_id: int, body: str = "an answer") -> None:
    assert client.post(f"/api/questions/{question_id}/answers", {"body": body}).status_code == 201


def set_level(client, collection: str, target_id: int, level: str) -> dict:
    resp = client.put(f"/api/{collection}/{target_id}/watch", {"level": level})
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["level"] == level
    return resp.get_json()


def level_of(client, collection: str, target_id: int) -> str:
    return client.get(f"/api/{collection}/{target_id}/watch").get_json()["level"]


def test_a_muted_question_tells_its_follower_and_its_asker_nothing(app, r, login_as):
    asker, follower, other, answerer = (login_as(n) for n in ("asker", "follower", "other", "answerer"))
    qid = ask(asker, "Mute me?")
    for client in (follower, other):
        assert client.post(f"/api/questions/{qid}/follow").status_code == 200
    assert level_of(follower, "questions", qid) == "watching"
    set_level(follower, "questions", qid, "muted")
    set_level(asker, "questions", qid, "muted")  # the asker can mute their own question too

    answer(answerer, qid)

    assert told(app, r, follower.user_id) == []
    assert told(app, r, asker.user_id) == []
    assert told(app, r, other.user_id) == [("new_answers", qid)]
    assert follower.post(f"/api/questions/{qid}/follow").get_json()["following"] is True
    assert level_of(follower, "questions", qid) == "watching"  # following again unmutes it
    answer(answerer, qid, "a second one")
    assert told(app, r, follower.user_id) == [("new_answers", qid)]


def test_a_muted_question_drops_a_mention_in_it_but_not_elsewhere(app, r, login_as):
    asker, muter, answerer = login_as("asker"), login_as("muter"), login_as("answerer")
    muted, other = ask(asker, "Muted thread"), ask(asker, "Other thread")
    set_level(muter, "questions", muted, "muted")

    answer(answerer, muted, "what do you think, @muter?")
    answer(answerer, other, "and here, @muter?")

    assert told(app, r, muter.user_id) == [("mention", other)]
    assert told(app, r, asker.user_id) == [("new_answers", muted), ("new_answers", other)]


def test_normal_ends_a_follow_but_the_asker_still_hears_of_answers(app, r, login_as):
    asker, follower, answerer = login_as("asker"), login_as("follower"), login_as("answerer")
    qid = ask(asker, "Normal?")
    follower.post(f"/api/questions/{qid}/follow")
    set_level(follower, "questions", qid, "normal")
    set_level(asker, "questions", qid, "normal")

    answer(answerer, qid)

    assert told(app, r, follower.user_id) == []
    assert told(app, r, asker.user_id) == [("new_answers", qid)]  # your own question reaches you anyway


def test_topic_watchers_hear_of_every_answer_and_followers_of_new_questions(app, r, login_as):
    make_topic(app, "redis")
    asker, watcher, follower, answerer = (login_as(n) for n in ("asker", "watcher", "follower", "answerer"))
    tid = asker.get("/api/topics").get_json()["topics"][0]["id"]
    assert set_level(watcher, "topics", tid, "watching")["following"] is True
    assert follower.post(f"/api/topics/{tid}/follow").status_code == 200
    assert level_of(follower, "topics", tid) == "normal"

    qid = ask(asker, "Streams in Redis?", ("redis",))
    answer(answerer, qid)

    assert told(app, r, watcher.user_id) == [("new_question", qid), ("new_answers", qid)]
    assert told(app, r, follower.user_id) == [("new_question", qid)]
    # Unfollowing a watched topic ends the watching too.
    assert watcher.delete(f"/api/topics/{tid}/follow").status_code == 200
    assert watcher.get(f"/api/topics/{tid}/watch").get_json() == {
        "topic": tid,
        "level": "normal",
        "following": False,
        "level_text": "Normal: every new question (following)",
    }
    answer(answerer, qid, "another")
    assert len(told(app, r, watcher.user_id)) == 2


def test_a_muted_topic_silences_its_questions_but_a_watched_question_wins(app, r, login_as):
    make_topic(app, "noise")
    make_topic(app, "signal")
    author, fan, answerer = login_as("author"), login_as("fan"), login_as("answerer")
    noise, signal = (t["id"] for t in author.get("/api/topics").get_json()["topics"])
    assert fan.post(f"/api/users/{author.user_id}/follow").status_code == 200
    set_level(fan, "topics", signal, "watching")
    assert set_level(fan, "topics", noise, "muted")["following"] is False

    both = ask(author, "In both topics", ("noise", "signal"))
    answer(answerer, both)
    assert told(app, r, fan.user_id) == []  # a follower of its author, a watcher of another topic: muted wins

    set_level(fan, "questions", both, "watching")  # an explicit watch on the question wins
    answer(answerer, both, "one more")
    assert told(app, r, fan.user_id) == [("new_answers", both)]

    elsewhere = ask(author, "Only in signal", ("signal",))
    assert told(app, r, fan.user_id)[-1] == ("new_question", elsewhere)


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/api/questions/{qid}/watch", {"level": "loud"}, 422),
        ("/api/questions/{qid}/watch", {"level": 3}, 422),
        ("/api/questions/{qid}/watch", {}, 422),
        ("/api/questions/{qid}/watch", None, 400),
        ("/api/topics/{tid}/watch", {"level": "MUTED"}, 422),
        ("/api/questions/999999/watch", {"level": "muted"}, 404),
        ("/api/topics/999999/watch", {"level": "muted"}, 404),
    ],
)
def test_bad_levels_and_missing_targets_are_json_errors(app, login_as, path, body, status):
    asker = login_as("asker")
    qid, tid = ask(asker, "Levels"), make_topic(app, "levels")
    resp = asker.put(path.format(qid=qid, tid=tid), body)
    assert resp.status_code == status
    assert "error" in resp.get_json()
    assert level_of(asker, "questions", qid) == "watching"  # nothing changed


def test_levels_need_a_login_and_a_csrf_token(app, api, login_as):
    qid = ask(login_as("asker"), "Who may?")
    anonymous = api.put(f"/api/questions/{qid}/watch", {"level": "muted"})
    assert anonymous.status_code == 401 and "error" in anonymous.get_json()
    other = login_as("other")
    forged = other.client.put(f"/api/questions/{qid}/watch", json={"level": "muted"})
    assert forged.status_code == 400 and "error" in forged.get_json()
    assert level_of(other, "questions", qid) == "normal"


def test_a_split_fan_out_already_queued_stops_for_who_muted_or_unfollowed(app, r, login_as, monkeypatch):
    asker, answerer = login_as("asker"), login_as("answerer")
    qid = ask(asker, "Popular")
    followers = [login_as(f"f{i}") for i in range(5)]
    for client in followers:
        client.post(f"/api/questions/{qid}/follow")
    hold_deliveries(app, monkeypatch)
    app.config["FANOUT_BATCH_SIZE"] = 2
    answer(answerer, qid)
    queued: list[tuple[int, list[int]]] = []
    with app.app_context():
        outbox_id = db.session.scalar(select(OutboxEvent.id).where(OutboxEvent.event_type == "new_answers"))
        assert fanout.fan_out(outbox_id, enqueue_batch=lambda oid, ids: queued.append((oid, ids))) == 6
    assert len(queued) == 3  # the batch tasks wait in the queue with their user ids

    muter, leaver = followers[0], followers[3]
    set_level(muter, "questions", qid, "muted")
    assert leaver.delete(f"/api/questions/{qid}/follow").status_code == 200
    for oid, ids in queued:
        task(app, "fan_out_batch").apply(args=[oid, ids]).get()

    assert told(app, r, muter.user_id) == []
    assert told(app, r, leaver.user_id) == []
    for client in [asker, *followers[1:3], followers[4]]:
        assert told(app, r, client.user_id) == [("new_answers", qid)]
    with app.app_context():
        assert db.session.get(OutboxEvent, outbox_id).delivered_at is not None


def test_small_events_drained_together_leave_out_a_question_muted_while_they_waited(app, r, login_as, monkeypatch):
    make_topic(app, "sse")
    first = login_as("first")
    with app.app_context():  # members in between: the candidates' ids lie far apart, as on a real site
        db.session.execute(insert(User), [{"username": f"member{i}", "password_hash": "x"} for i in range(50)])
        db.session.commit()
    second, watcher, answerer = (login_as(n) for n in ("second", "watcher", "answerer"))
    tid = first.get("/api/topics").get_json()["topics"][0]["id"]
    set_level(watcher, "topics", tid, "watching")
    q1, q2 = ask(first, "One", ("sse",)), ask(second, "Two", ("sse",))
    hold_deliveries(app, monkeypatch)
    answer(answerer, q1)
    answer(answerer, q2, "and @watcher, look")
    set_level(first, "questions", q1, "muted")  # while the events wait in the outbox
    set_level(watcher, "questions", q2, "muted")

    assert task(app, "drain_outbox").apply().get() == 3  # two answers and a mention

    assert told(app, r, first.user_id) == []
    assert told(app, r, second.user_id) == [("new_answers", q2)]
    # The watcher heard of both questions (held back before the hold) and of q1's answer;
    # q2 is muted: neither its answer nor the mention in it.
    assert told(app, r, watcher.user_id) == [("new_question", q1), ("new_question", q2), ("new_answers", q1)]


def test_watch_levels_are_read_once_per_batch_never_per_recipient(app, login_as):
    asker = login_as("asker")
    qid = ask(asker, "Many")
    followers = [login_as(f"f{i}") for i in range(6)]
    for client in followers:
        client.post(f"/api/questions/{qid}/follow")
    set_level(asker, "questions", qid, "muted")  # still a candidate (the asker), then left out
    statements: list[str] = []
    with app.app_context():

        def count(conn, cursor, statement, *args):
            if "watch_levels" in statement:
                statements.append(statement)

        event.listen(db.engine, "before_cursor_execute", count)
        try:
            batches = list(recipient_batches(QuestionFollowers(qid), "new_answers", None, 3))
        finally:
            event.remove(db.engine, "before_cursor_execute", count)
    assert [uid for b in batches for uid in b] == [f.user_id for f in followers]
    # Pages of 3, 3 and 1 candidates: one read of the levels each, whoever is in them.
    assert len(statements) == 3


def test_the_pages_offer_levels_and_an_inbox_item_mutes_its_question_in_one_click(app, r, login_as):
    asker, follower, answerer = login_as("asker"), login_as("follower"), login_as("answerer")
    qid = ask(asker, "From the inbox")
    tid = make_topic(app, "pages")
    follower.post(f"/api/questions/{qid}/follow")
    page = follower.get(f"/questions/{qid}").get_data(as_text=True)
    assert re.search(r'<input checked [^>]*value="watching">', page)
    assert "Watching: every new question and every new answer" in follower.get(f"/topics/{tid}").get_data(as_text=True)
    answer(answerer, qid)

    inbox = follower.get("/inbox").get_data(as_text=True)
    assert "Mute this question" in inbox
    chinese = follower.get("/inbox", headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
    assert "屏蔽此问题" in chinese and "Mute this question" not in chinese
    token = re.search(r'class="mute-question-form".*?name="csrf_token" value="([^"]+)"', inbox, re.S)[1]
    forged = follower.client.post(f"/watch/question/{qid}", data={"level": "muted", "back": "inbox"})
    assert forged.status_code == 400 and level_of(follower, "questions", qid) == "watching"
    bad = follower.client.post(
        f"/watch/question/{qid}", data={"level": "loud", "back": "inbox", "csrf_token": token}, follow_redirects=True
    )
    assert bad.status_code == 200 and "Choose a level." in bad.get_data(as_text=True)
    assert level_of(follower, "questions", qid) == "watching"
    resp = follower.client.post(f"/watch/question/{qid}", data={"level": "muted", "back": "inbox", "csrf_token": token})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/inbox")
    assert level_of(follower, "questions", qid) == "muted"
    answer(answerer, qid, "unheard")
    assert told(app, r, follower.user_id) == [("new_answers", qid)]  # the one before the mute stays
    page = follower.get(f"/questions/{qid}").get_data(as_text=True)
    assert re.search(r'<input checked [^>]*value="muted">', page)

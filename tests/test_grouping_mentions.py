"""Grouped inbox items, @mentions and the stream's catch-all mode, through the public API."""

from __future__ import annotations

import json

import pytest

from qa_notify.events.audiences import Users
from qa_notify.events.outbox import emit
from qa_notify.events.types import CustomEvent
from qa_notify.extensions import db
from qa_notify.models import OutboxEvent
from qa_notify.qa.mentions import MAX_MENTIONS, mentioned_names

from .live import WebProcess, read_events
from .test_stream import in_background, wait_open


def answer_as(login_as, names: list[str], qid: int) -> None:
    for name in names:
        client = login_as(name)
        assert client.post(f"/api/questions/{qid}/answers", {"body": f"{name} says hi"}).status_code == 201


def items_of(client) -> dict:
    return client.get("/api/notifications").get_json()


def test_answers_to_one_question_are_one_item_with_count_and_actors(app, login_as):
    asker = login_as("asker")
    qid = asker.post("/api/questions", {"title": "How do SSE retries work?"}).get_json()["id"]
    other = asker.post("/api/questions", {"title": "Another"}).get_json()["id"]
    answer_as(login_as, ["bob", "carl", "dora", "erin", "fred"], qid)
    answer_as(login_as, ["gus"], other)
    inbox = items_of(asker)
    assert inbox["unread_count"] == 2
    [other_item, group] = inbox["items"]
    assert other_item["count"] == 1 and other_item["actors"] == ["gus"]
    assert group["type"] == "new_answers" and group["count"] == 5 and not group["read"]
    assert group["actors"] == ["fred", "erin", "dora"] and group["actor_count"] == 5
    assert group["payload"]["author"] == "fred" and group["group"] == f"new_answers:question:{qid}"
    assert group["latest_at"] >= group["first_at"]
    # The page says it the same way.
    page = asker.client.get("/inbox").get_data(as_text=True)
    assert "fred and 4 others answered \u201cHow do SSE retries work?\u201d" in page
    assert 'data-count="5"' in page


def test_reading_an_item_reads_all_its_parts_and_a_later_answer_starts_a_new_item(app, login_as):
    asker = login_as("asker")
    qid = asker.post("/api/questions", {"title": "Groups"}).get_json()["id"]
    answer_as(login_as, ["bob", "carl", "dora"], qid)
    group = items_of(asker)["items"][0]
    marked = asker.post("/api/notifications/read", {"ids": [group["id"]]}).get_json()
    assert len(marked["marked"]) == 3 and marked["unread_count"] == 0
    answer_as(login_as, ["erin"], qid)
    inbox = items_of(asker)
    assert inbox["unread_count"] == 1
    fresh, old = inbox["items"]
    assert (fresh["count"], fresh["read"], fresh["actors"]) == (1, False, ["erin"])
    assert (old["count"], old["read"]) == (3, True)
    # Reading the old (read) item again changes nothing.
    again = asker.post("/api/notifications/read", {"ids": [old["id"]]}).get_json()
    assert again == {"marked": [], "unread_count": 1}


def test_the_same_person_answering_twice_is_one_actor(app, login_as):
    asker = login_as("asker")
    qid = asker.post("/api/questions", {"title": "Twice"}).get_json()["id"]
    bob = login_as("bob")
    for i in range(2):
        bob.post(f"/api/questions/{qid}/answers", {"body": f"take {i}"})
    [item] = items_of(asker)["items"]
    assert (item["count"], item["actors"], item["actor_count"]) == (2, ["bob"], 1)
    assert "bob answered" in asker.client.get("/inbox").get_data(as_text=True)


def test_producer_events_group_by_their_own_group_field(app, login_as):
    ann = login_as("ann")
    with app.app_context():
        for i in range(3):
            emit(
                CustomEvent("deploy", {"text": f"build {i}", "group": "web"}),
                Users([ann.user_id]),
            )
        emit(CustomEvent("deploy", {"text": "no group"}), Users([ann.user_id]))
        db.session.commit()
    inbox = items_of(ann)
    assert inbox["unread_count"] == 2
    assert [(i["count"], i["payload"]["text"]) for i in inbox["items"]] == [(1, "no group"), (3, "build 2")]


def test_mention_notifies_once_even_when_following(app, login_as, r):
    asker = login_as("asker")
    qid = asker.post("/api/questions", {"title": "Who knows?"}).get_json()["id"]
    dora = login_as("dora")
    dora.post(f"/api/follows/question/{qid}", {})  # dora follows the question too
    bob = login_as("bob")
    body = "@dora and @asker may know; @nobody-here does not exist; @bob is me; mail bob@dora.org"
    assert bob.post(f"/api/questions/{qid}/answers", {"body": body}).status_code == 201
    for client in (dora, asker):
        [item] = items_of(client)["items"]
        assert item["type"] == "mention" and item["count"] == 1
        assert item["payload"]["author"] == "bob" and item["payload"]["question_id"] == qid
        assert item["payload"]["url"].startswith(f"/questions/{qid}#answer-")
    assert items_of(bob)["items"] == []  # a mention of yourself is ignored
    assert "bob mentioned you in \u201cWho knows?\u201d" in dora.client.get("/inbox").get_data(as_text=True)


def test_muting_mentions_leaves_the_follow_notification(app, login_as):
    asker = login_as("asker")
    qid = asker.post("/api/questions", {"title": "Muted"}).get_json()["id"]
    assert asker.put("/api/preferences", {"muted": ["mention"]}).get_json()["muted"] == ["mention"]
    login_as("bob").post(f"/api/questions/{qid}/answers", {"body": "cc @asker"})
    [item] = items_of(asker)["items"]
    assert item["type"] == "new_answers"  # muted the mention, still follows the question


def test_mention_in_a_question_and_the_limit_of_names(app, login_as, make_user):
    names = [f"user{i:02d}" for i in range(25)]
    for name in names:
        make_user(name)
    asker = login_as("asker")
    body = " ".join("@" + n for n in names)
    qid = asker.post("/api/questions", {"title": "Calling all", "body": body}).get_json()["id"]
    reached = [name for name in names if _inbox_types(app, name) == ["mention"]]
    assert reached == names[:MAX_MENTIONS]
    with app.app_context():
        row = db.session.query(OutboxEvent).filter_by(event_type="mention").one()
        assert row.payload["url"] == f"/questions/{qid}" and row.payload["answer_id"] is None


def _inbox_types(app, username: str) -> list[str]:
    from sqlalchemy import select

    from qa_notify.models import Notification, User

    with app.app_context():
        uid = db.session.scalar(select(User.id).where(User.username == username))
        return [n.event_type for n in db.session.scalars(select(Notification).where(Notification.user_id == uid))]


def test_a_megabyte_of_names_is_a_clear_error_and_parsing_stays_bounded(app, login_as):
    bob = login_as("bob")
    resp = bob.post("/api/questions", {"title": "spam", "body": "@a-name " * 130_000})
    assert resp.status_code in (413, 422) and "error" in resp.get_json()
    # The parser itself stops at MAX_MENTIONS names, whatever the text's length.
    assert len(mentioned_names(" ".join(f"@name{i}" for i in range(100_000)))) == MAX_MENTIONS


@pytest.fixture(scope="module")
def web(redis_url, database_url):
    proc = WebProcess(database_url, redis_url, SSE_HEARTBEAT_SECONDS="0.5").start()
    yield proc
    proc.stop()


def test_catch_all_streams_other_services_types_as_messages(web, app, login_as):
    ann = login_as("ann")
    tab = in_background(read_events, web.client("ann"), 2, params={"catch_all": "1"})
    plain = in_background(read_events, web.client("ann"), 2)
    wait_open(tab, plain)
    with app.app_context():
        emit(CustomEvent("deploy", {"text": "v2 is live"}), Users([ann.user_id]))
        db.session.commit()
    qid = ann.post("/api/questions", {"title": "Mine"}).get_json()["id"]
    login_as("bob").post(f"/api/questions/{qid}/answers", {"body": "hello"})
    deploy, answer = tab()
    assert deploy.event == "message" and deploy.id
    envelope = json.loads(deploy.data)
    assert envelope["type"] == "deploy" and envelope["data"]["text"] == "v2 is live"
    assert answer.event == "new_answers" and json.loads(answer.data)["excerpt"] == "hello"
    # Without catch_all, nothing changes: the type is the event's name.
    assert [e.event for e in plain()] == ["deploy", "new_answers"]
    # Replay in catch-all mode frames the same way.
    with app.app_context():
        emit(CustomEvent("deploy", {"text": "v3"}), Users([ann.user_id]))
        db.session.commit()
    [replayed] = read_events(web.client("ann"), 1, params={"catch_all": "1", "last_event_id": answer.id})
    assert replayed.event == "message" and json.loads(replayed.data)["data"]["text"] == "v3"


def test_question_page_links_members_mentions_and_escapes_the_rest(app, login_as):
    asker = login_as("asker")
    dora = login_as("dora")
    body = "ask @dora. or @ghost <script>alert(1)</script>"
    qid = asker.post("/api/questions", {"title": "Links", "body": body}).get_json()["id"]
    page = asker.client.get(f"/questions/{qid}").get_data(as_text=True)
    assert f'<a class="mention" href="/users/{dora.user_id}">@dora</a>.' in page
    assert "@ghost" in page and 'href="/users/0"' not in page  # not a member: plain text
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page


def test_a_mentioned_user_deleted_before_the_fan_out_is_skipped(app, login_as, make_user):
    from sqlalchemy import delete

    from qa_notify.events.types import Mention
    from qa_notify.models import User

    gone = make_user("gone")
    dora = login_as("dora")
    with app.app_context():
        db.session.execute(delete(User).where(User.id == gone.id))
        event = Mention(1, "Q", None, "bob", "hi @gone @dora", "/questions/1")
        emit(event, Users([gone.id, dora.user_id]))
        db.session.commit()
        row = db.session.query(OutboxEvent).filter_by(event_type="mention").one()
        assert row.delivered_at is not None and row.failures == 0
    assert [i["type"] for i in items_of(dora)["items"]] == ["mention"]

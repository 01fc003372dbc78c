"""Inbox triage through the public API and pages: mark unread, archive, filters, reading a
question by viewing it (and the badge event that reaches the user's other streams), retention."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from qa_notify.extensions import db
from qa_notify.models import Notification, utcnow

from .live import WebProcess, read_events
from .test_stream import in_background, wait_open


def ask(client, title: str) -> int:
    resp = client.post("/api/questions", {"title": title})
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()["id"]


def answer(client, qid: int, body: str = "an answer") -> None:
    assert client.post(f"/api/questions/{qid}/answers", {"body": body}).status_code == 201


def inbox(client, **params) -> dict:
    resp = client.get("/api/notifications", query_string=params)
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def titles(items: list[dict]) -> list[str]:
    return [i["payload"].get("question_title") or i["payload"].get("title") for i in items]


@pytest.fixture
def asker_with_two_questions(login_as):
    """ann asked "First" (3 answers: one item) and "Second" (1 answer); bob answered both."""
    ann, bob = login_as("ann"), login_as("bob")
    first, second = ask(ann, "First"), ask(ann, "Second")
    for i in range(3):
        answer(bob, first, f"first {i}")
    answer(bob, second, "second")
    ann.first, ann.second, ann.bob = first, second, bob
    return ann


# -- mark unread -------------------------------------------------------------------------


def test_mark_unread_acts_on_the_whole_item_and_raises_the_badge(asker_with_two_questions):
    ann = asker_with_two_questions
    second, first = inbox(ann)["items"]
    assert ann.post("/api/notifications/read", {"ids": [first["id"]]}).get_json()["unread_count"] == 1
    done = ann.post("/api/notifications/unread", {"ids": [first["id"]]}).get_json()
    assert len(done["marked"]) == 3 and done["unread_count"] == 2  # every part, and the badge goes up
    again = inbox(ann)
    assert again["unread_count"] == 2
    assert [(i["count"], i["read"]) for i in again["items"]] == [(1, False), (3, False)]
    # An unread item cannot be marked unread again: nothing changes.
    assert ann.post("/api/notifications/unread", {"ids": [second["id"]]}).get_json() == {
        "marked": [],
        "unread_count": 2,
    }


def test_an_item_marked_unread_joins_the_unread_parts_of_its_group(asker_with_two_questions):
    ann = asker_with_two_questions
    first = inbox(ann)["items"][1]
    ann.post("/api/notifications/read", {"ids": [first["id"]]})
    answer(ann.bob, ann.first, "a fourth")  # a new unread item of the same group
    assert inbox(ann)["unread_count"] == 2
    ann.post("/api/notifications/unread", {"ids": [first["id"]]})
    items = inbox(ann)["items"]
    assert [(i["count"], i["read"]) for i in items] == [(4, False), (1, False)]
    assert inbox(ann)["unread_count"] == 2


# -- archive -----------------------------------------------------------------------------


def test_archiving_an_unread_item_reads_it_and_hides_it_until_the_archived_filter(asker_with_two_questions):
    ann = asker_with_two_questions
    second, first = inbox(ann)["items"]
    done = ann.post("/api/notifications/archive", {"ids": [first["id"]]}).get_json()
    assert len(done["archived"]) == 3 and done["unread_count"] == 1
    assert titles(inbox(ann)["items"]) == ["Second"]
    archived = inbox(ann, archived=1)["items"]
    assert titles(archived) == ["First"] and archived[0]["read"] and archived[0]["count"] == 3
    # Marking it unread brings it back to the inbox, unread.
    assert ann.post("/api/notifications/unread", {"ids": [archived[0]["id"]]}).get_json()["unread_count"] == 2
    assert titles(inbox(ann)["items"]) == ["Second", "First"] and inbox(ann, archived=1)["items"] == []


def test_the_inbox_page_archives_and_marks_unread_with_its_forms(asker_with_two_questions):
    ann = asker_with_two_questions
    first = inbox(ann)["items"][1]
    form = {"csrf_token": ann.token(), "ids": str(first["id"]), "view": "unread=1"}
    resp = ann.client.post("/inbox/archive", data=form, follow_redirects=True)
    page = resp.get_data(as_text=True)
    assert "Archived 3 notifications." in page and "\u201cFirst\u201d" not in page and "\u201cSecond\u201d" in page
    assert resp.request.args.get("unread") == "1"  # back to the filtered view it came from
    resp = ann.client.post("/inbox/unread", data=form, follow_redirects=True)
    assert "Marked 3 notifications unread." in resp.get_data(as_text=True)
    assert inbox(ann)["unread_count"] == 2
    # Without the CSRF token nothing changes.
    resp = ann.client.post("/inbox/archive", data={"ids": str(first["id"])}, follow_redirects=True)
    assert "Your form expired" in resp.get_data(as_text=True) and inbox(ann)["unread_count"] == 2


def test_nobody_can_triage_another_users_notifications(asker_with_two_questions, login_as):
    ann = asker_with_two_questions
    ids = [i["id"] for i in inbox(ann)["items"]]
    eve = login_as("eve")
    assert eve.post("/api/notifications/archive", {"ids": ids}).get_json() == {"archived": [], "unread_count": 0}
    ann.post("/api/notifications/read", {"ids": ids})
    assert eve.post("/api/notifications/unread", {"ids": ids}).get_json() == {"marked": [], "unread_count": 0}
    assert inbox(ann)["unread_count"] == 0 and len(inbox(ann)["items"]) == 2


# -- filters -----------------------------------------------------------------------------


def test_filters_combine_and_pagination_keeps_them(asker_with_two_questions):
    ann = asker_with_two_questions
    ann.post("/api/notifications/read", {"ids": [inbox(ann)["items"][0]["id"]]})  # "Second" read
    ask(ann.bob, f"Hey @ann about {ann.first}")  # a mention, not about ann's questions
    assert titles(inbox(ann, unread=1)["items"]) == [f"Hey @ann about {ann.first}", "First"]
    assert titles(inbox(ann, type="new_answers")["items"]) == ["Second", "First"]
    assert titles(inbox(ann, type="new_answers", unread=1)["items"]) == ["First"]
    assert titles(inbox(ann, question=ann.second)["items"]) == ["Second"]
    assert inbox(ann, question=ann.second, unread=1)["items"] == []
    assert inbox(ann, type="broadcast")["items"] == []
    # Five more questions answered: pages of two, each page still filtered.
    for n in range(5):
        answer(ann.bob, ask(ann, f"More {n}"))
    pages, before = [], None
    while True:
        page = inbox(ann, type="new_answers", unread=1, limit=2, **({"before": before} if before else {}))
        if not page["items"]:
            break
        pages.append(titles(page["items"]))
        before = page["items"][-1]["id"]
    assert pages == [["More 4", "More 3"], ["More 2", "More 1"], ["More 0", "First"]]


def test_the_inbox_page_filters_and_keeps_the_filter_in_its_links(asker_with_two_questions):
    ann = asker_with_two_questions
    ann.post("/api/notifications/read", {"ids": [inbox(ann)["items"][0]["id"]]})
    page = ann.client.get("/inbox?unread=1&type=new_answers").get_data(as_text=True)
    assert "\u201cFirst\u201d" in page and "\u201cSecond\u201d" not in page
    assert 'name="unread" value="1" checked' in page and '<option value="new_answers" selected>' in page
    page = ann.client.get(f"/inbox?question={ann.second}").get_data(as_text=True)
    assert "\u201cSecond\u201d" in page and "\u201cFirst\u201d" not in page
    assert f"Question #{ann.second}" in page


@pytest.mark.parametrize(
    "params, message",
    [
        ({"unread": "maybe"}, "'unread' must be 1 or 0"),
        ({"archived": "2"}, "'archived' must be 1 or 0"),
        ({"type": "New Answers"}, "'type' must be an event type"),
        ({"type": "<script>"}, "'type' must be an event type"),
        ({"question": "abc"}, "'question' must be a question id"),
        ({"question": "0"}, "'question' must be a question id"),
        ({"question": "99999999999"}, "'question' must be a question id"),
    ],
)
def test_bad_filters_are_422_on_the_api_and_a_message_on_the_page(login_as, params, message):
    ann = login_as("ann")
    resp = ann.get("/api/notifications", query_string=params)
    assert resp.status_code == 422 and message in resp.get_json()["error"]
    page = ann.client.get("/inbox", query_string=params)
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "Filter ignored" in text and "<script>" not in text


@pytest.mark.parametrize("path", ["/api/notifications/unread", "/api/notifications/archive"])
@pytest.mark.parametrize(
    "body",
    [{}, {"ids": []}, {"ids": "1"}, {"ids": [0]}, {"ids": [True]}, {"ids": [2**31]}, {"ids": list(range(1, 1002))}],
)
def test_bad_ids_are_422(login_as, path, body):
    resp = login_as("ann").post(path, body)
    assert resp.status_code == 422 and "'ids'" in resp.get_json()["error"]


@pytest.mark.parametrize("path", ["/api/notifications/unread", "/api/notifications/archive"])
def test_triage_needs_login_and_the_csrf_token(api, login_as, path):
    assert api.post(path, {"ids": [1]}).status_code == 401
    resp = login_as("ann").client.post(path, json={"ids": [1]})
    assert resp.status_code == 400 and "CSRF" in resp.get_json()["error"]


# -- viewing a question reads its notifications ------------------------------------------


def test_viewing_a_question_reads_only_that_questions_notifications(asker_with_two_questions):
    ann = asker_with_two_questions
    page = ann.client.get(f"/questions/{ann.first}").get_data(as_text=True)
    assert 'id="unread-badge" class="badge" data-count="1"' in page  # its own badge: only "Second" left
    items = inbox(ann)["items"]
    assert [(i["payload"]["question_title"], i["read"]) for i in items] == [("Second", False), ("First", True)]
    assert inbox(ann)["unread_count"] == 1


def test_viewing_a_question_reads_a_mention_in_it_and_leaves_other_users_alone(login_as):
    ann, bob, carl = login_as("ann"), login_as("bob"), login_as("carl")
    qid = ask(bob, "Ping")
    assert carl.post(f"/api/questions/{qid}/follow").status_code in (200, 201)
    answer(bob, qid, "@ann look at this")
    assert inbox(ann)["unread_count"] == 1 and inbox(carl)["unread_count"] == 1
    ann.client.get(f"/questions/{qid}")
    assert inbox(ann)["unread_count"] == 0
    assert inbox(carl)["unread_count"] == 1  # carl did not look at it


@pytest.fixture(scope="module")
def web(redis_url, database_url):
    proc = WebProcess(database_url, redis_url, SSE_HEARTBEAT_SECONDS="0.5").start()
    yield proc
    proc.stop()


def test_viewing_a_question_tells_the_viewers_other_streams_and_nobody_else(web, app, login_as):
    ann, bob, carl = login_as("ann"), login_as("bob"), login_as("carl")
    qid = ask(ann, "Streams")
    assert carl.post(f"/api/questions/{qid}/follow").status_code in (200, 201)
    answer(bob, qid)
    answer(bob, qid)
    tabs = [in_background(read_events, web.client("ann"), 1) for _ in range(2)]
    carls = in_background(read_events, web.client("carl"), 1)
    wait_open(*tabs, carls)
    viewer = web.client("ann")
    assert viewer.get(f"/questions/{qid}").status_code == 200
    for tab in tabs:
        [event] = tab()
        data = json.loads(event.data)
        assert event.event == "read" and data["unread_count"] == 0 and len(data["ids"]) == 2
    # carl's stream hears only his own read, never ann's.
    assert web.client("carl").post("/api/notifications/read", json={"all": True}).status_code == 200
    [event] = carls()
    assert (event.event, json.loads(event.data)["all"]) == ("read", True)
    # Viewing it again reads nothing, so it pushes nothing: the next event is ann's own "read all".
    tab = in_background(read_events, web.client("ann"), 1)
    wait_open(tab)
    assert viewer.get(f"/questions/{qid}").status_code == 200
    assert viewer.post("/api/notifications/read", json={"all": True}).status_code == 200
    [event] = tab()
    assert (event.event, json.loads(event.data)["all"]) == ("read", True)


# -- retention ---------------------------------------------------------------------------


def _age(app, ids: list[int], days: int, read: bool) -> None:
    then = utcnow() - timedelta(days=days)
    with app.app_context():
        values = {"created_at": then, "read_at": then if read else None}
        db.session.execute(update(Notification).where(Notification.id.in_(ids)).values(**values))
        db.session.commit()


def _purge(app) -> int:
    with app.app_context():
        return app.extensions["celery"].tasks["workers.purge_read_notifications"].apply().get()


def test_retention_deletes_only_long_read_notifications_in_bounded_batches(app, login_as):
    from workers import beat_schedule

    ann, bob = login_as("ann"), login_as("bob")
    questions = [ask(ann, f"Old {n}") for n in range(8)]
    for qid in questions:
        answer(bob, qid)
    with app.app_context():
        ids = sorted(db.session.scalars(select(Notification.id).where(Notification.user_id == ann.user_id)))
    assert len(ids) == 8
    old_read, old_unread, recent_read, fresh = ids[:5], ids[5:6], ids[6:7], ids[7:]
    _age(app, old_read, 91, read=True)
    _age(app, old_unread, 400, read=False)
    _age(app, recent_read, 89, read=True)
    app.config.update(INBOX_RETENTION_BATCH=2, INBOX_RETENTION_MAX_BATCHES=2)
    assert _purge(app) == 4  # two batches of two, then the run stops
    assert _purge(app) == 1  # the next run carries on
    assert _purge(app) == 0
    left = {i["id"] for i in inbox(ann)["items"]}
    assert left == set(old_unread + recent_read + fresh)
    assert inbox(ann)["unread_count"] == 2
    schedule = beat_schedule(app)["purge-read-notifications"]
    assert schedule["task"] == "workers.purge_read_notifications"
    assert schedule["schedule"] == app.config["INBOX_RETENTION_SECONDS"]


# -- the migration -----------------------------------------------------------------------


def test_the_migration_fills_in_the_question_of_events_from_before_it(app):
    import sqlalchemy as sa
    from flask_migrate import upgrade

    outbox = sa.table(
        "outbox_events",
        *(sa.column(name) for name in ("id", "event_type", "audience", "created_at", "attempts")),
        sa.column("payload", sa.JSON),
        sa.column("question_id", sa.Integer),
    )
    rows = [
        (1, "new_answers", {"question_id": 7, "question_title": "Seven"}),
        (2, "mention", {"question_id": 8}),
        (3, "new_question", {"question_id": 9, "title": "Nine"}),
        (4, "broadcast", {"broadcast_id": 1, "message": "hi"}),
        (5, "deploy", {"question_id": 10, "text": "a producer's field, not ours"}),
    ]
    with app.app_context():
        db.drop_all()
        with db.engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
        try:
            upgrade(revision="5e8a1c3d7b90")  # the schema before inbox triage
            with db.engine.begin() as conn:
                conn.execute(
                    outbox.insert(),
                    [
                        {
                            "id": i,
                            "event_type": t,
                            "payload": p,
                            "audience": "{}",
                            "created_at": utcnow(),
                            "attempts": 0,
                        }
                        for i, t, p in rows
                    ],
                )
            upgrade()
            with db.engine.connect() as conn:
                found = dict(conn.execute(sa.select(outbox.c.id, outbox.c.question_id).order_by(outbox.c.id)).all())
        finally:
            db.drop_all()
            with db.engine.begin() as conn:
                conn.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
            db.create_all()
    assert found == {1: 7, 2: 8, 3: 9, 4: None, 5: None}

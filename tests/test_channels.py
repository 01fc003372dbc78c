"""The preferences matrix: which types reach a user on which channel (in-app, push, email).

Through the API and the page as a user sets them, against real fan-out, the real Redis
stream and a real SMTP server: turning a channel off keeps the inbox whole; turning a type
off on every channel is what muting always was.
"""

from __future__ import annotations

import json

from sqlalchemy import select

from qa_notify.events import channels
from qa_notify.events.announce import allowed
from qa_notify.extensions import db
from qa_notify.models import ChannelMute, MutedType

from .test_email import ADDRESS, answer_as, app_config, ask, asker_with_email, mail_settings, scan  # noqa: F401
from .test_ingest import envelope, raw, run_ingest  # noqa: F401  (raw is a fixture)
from .test_pipeline import inbox_types

ALL_ON = {"in_app": True, "push": True, "email": True}


def preferences_events(r, user_id: int) -> list[dict]:
    """The live ``preferences`` events the user's open tabs were sent, oldest first."""
    return [json.loads(f["d"]) for _, f in r.xrange(channels.user_stream(user_id)) if f["t"] == "preferences"]


def test_every_type_and_channel_is_on_until_changed(login_as):
    prefs = login_as("ann").get("/api/preferences").get_json()
    assert prefs["available_channels"] == ["in_app", "push", "email"]
    assert prefs["channels"] == {
        t: ALL_ON for t in ("new_question", "new_answers", "mention", "broadcast", "producers")
    }


def test_a_partial_change_touches_only_what_it_names(login_as):
    ann = login_as("ann")
    ann.put("/api/preferences", {"channels": {"mention": {"email": False}}})
    saved = ann.put("/api/preferences", {"channels": {"new_answers": {"in_app": False, "push": False}}}).get_json()
    assert saved["channels"]["mention"] == {**ALL_ON, "email": False}
    assert saved["channels"]["new_answers"] == {"in_app": False, "push": False, "email": True}
    assert saved["channels"]["broadcast"] == ALL_ON and saved["muted"] == []


def test_bad_matrices_are_refused_and_change_nothing(login_as):
    ann = login_as("ann")
    ann.put("/api/preferences", {"channels": {"mention": {"push": False}}})
    for body, message in [
        ({"channels": []}, "'channels' must be an object"),
        ({"channels": {"nonsense": {"email": False}}}, "unknown type 'nonsense'"),
        ({"channels": {"mention": {"sms": False}}}, "unknown channel 'sms'"),
        ({"channels": {"mention": {"email": "no"}}}, "must be true or false"),
        ({"channels": {"mention": False}}, "'channels.mention' must be an object"),
        ({"channels": {"mention": {"email": False}}, "muted": []}, "not both"),
        ({"channels": {"broadcast": {"email": False}}, "email_mode": "hourly"}, "'email_mode' must be one of"),
    ]:
        resp = ann.put("/api/preferences", body)
        assert resp.status_code == 422 and message in resp.get_json()["error"], (body, resp.get_json())
    assert ann.get("/api/preferences").get_json()["channels"]["mention"] == {**ALL_ON, "push": False}
    assert ann.get("/api/preferences").get_json()["channels"]["broadcast"] == ALL_ON


def test_a_channel_off_keeps_the_inbox_whole(app, login_as):
    asker = login_as("asker")
    asker.put("/api/preferences", {"channels": {"new_answers": {"in_app": False, "push": False, "email": True}}})
    qid = ask(asker, "Still in my inbox?")
    answer_as(login_as, ["bob"], qid)
    assert [t for t, _ in inbox_types(app, asker.user_id)] == ["new_answers"]
    assert asker.get("/api/notifications/unread_count").get_json()["unread_count"] == 1


def test_off_on_every_channel_is_muting_no_inbox_row(app, login_as):
    asker = login_as("asker")
    saved = asker.put("/api/preferences", {"channels": {"new_answers": dict.fromkeys(ALL_ON, False)}}).get_json()
    assert saved["muted"] == ["new_answers"]
    qid = ask(asker, "Nobody tells me")
    answer_as(login_as, ["bob"], qid)
    assert inbox_types(app, asker.user_id) == []
    # One channel back on: the type is back in the inbox, and only that channel announces it.
    saved = asker.put("/api/preferences", {"channels": {"new_answers": {"email": True}}}).get_json()
    assert saved["muted"] == [] and saved["channels"]["new_answers"] == {"in_app": False, "push": False, "email": True}
    answer_as(login_as, ["carl"], qid)
    assert [t for t, _ in inbox_types(app, asker.user_id)] == ["new_answers"]


def test_mutes_from_before_the_matrix_mean_off_everywhere(app, login_as):
    """The migration leaves ``muted_types`` as it was: those rows read as a row of the matrix all off."""
    ann = login_as("ann")
    with app.app_context():
        db.session.add(MutedType(user_id=ann.user_id, event_type="broadcast"))
        db.session.commit()
    prefs = ann.get("/api/preferences").get_json()
    assert prefs["channels"]["broadcast"] == dict.fromkeys(ALL_ON, False) and prefs["muted"] == ["broadcast"]
    # The old API still mutes and unmutes whole types, and never leaves a channel row behind.
    ann.put("/api/preferences", {"channels": {"mention": {"push": False}}})
    assert ann.put("/api/preferences", {"muted": ["mention"]}).get_json()["channels"]["mention"] == dict.fromkeys(
        ALL_ON, False
    )
    with app.app_context():
        assert db.session.scalars(select(ChannelMute).where(ChannelMute.user_id == ann.user_id)).all() == []
    assert ann.put("/api/preferences", {"muted": []}).get_json()["channels"]["broadcast"] == ALL_ON


def test_email_only_for_mentions(app, smtp, login_as):
    """An away email covers only the types whose email channel is on; the inbox has them all."""
    asker = asker_with_email(login_as, smtp)
    off = {t: {"email": False} for t in ("new_question", "new_answers", "broadcast", "producers")}
    assert asker.put("/api/preferences", {"channels": off}).status_code == 200
    qid = ask(asker, "Answers stay in the inbox")
    answer_as(login_as, ["bob"], qid)
    scan(app)
    assert smtp.to(ADDRESS) == []  # an answer only: nothing to email
    carl = login_as("carl")
    assert carl.post(f"/api/questions/{qid}/answers", {"body": "@asker look at this"}).status_code == 201
    scan(app)
    [message] = smtp.to(ADDRESS)
    text = message.get_body(("plain",)).get_content()
    assert "mentioned you" in text and "bob answered" not in text
    assert sorted(t for t, _ in inbox_types(app, asker.user_id)) == ["mention", "new_answers"]


def test_producer_types_are_one_row(app, r, raw, login_as):  # noqa: F811
    alice = login_as("alice")
    alice.put("/api/preferences", {"channels": {"producers": dict.fromkeys(ALL_ON, False)}})
    raw.xadd(channels.INGEST_STREAM, {"envelope": envelope(user="alice", type="deploy", payload={"text": "v2"})})
    raw.xadd(channels.INGEST_STREAM, {"envelope": envelope(user="alice", type="build", payload={"text": "ok"})})
    run_ingest(app)
    assert inbox_types(app, alice.user_id) == []
    alice.put("/api/preferences", {"channels": {"producers": {"in_app": True}}})
    raw.xadd(channels.INGEST_STREAM, {"envelope": envelope(user="alice", type="deploy", payload={"text": "v3"})})
    run_ingest(app)
    assert [t for t, _ in inbox_types(app, alice.user_id)] == ["deploy"]
    with app.app_context():
        assert allowed([alice.user_id], "deploy", "in_app") == {alice.user_id}
        assert allowed([alice.user_id], "build", "email") == set()


def test_open_tabs_are_told_which_types_to_keep_quiet(app, r, login_as):
    """The page's toasts follow the in-app column at once: a live ``preferences`` event, only on change."""
    ann, bob = login_as("ann"), login_as("bob")
    ann.put("/api/preferences", {"channels": {"new_answers": {"in_app": False}}})
    ann.put("/api/preferences", {"channels": {"new_answers": {"email": False}}})  # in-app unchanged: no event
    ann.put("/api/preferences", {"channels": {"mention": {"in_app": False}, "broadcast": dict.fromkeys(ALL_ON, False)}})
    assert preferences_events(r, ann.user_id) == [
        {"v": 1, "silent": ["new_answers"]},
        {"v": 1, "silent": ["mention", "new_answers"]},  # broadcast is off everywhere: never sent at all
    ]
    assert preferences_events(r, bob.user_id) == []
    page = ann.get("/").get_data(as_text=True)
    assert 'data-silent="mention new_answers"' in page


def test_the_page_saves_the_matrix(app, login_as):
    ann = login_as("ann")
    page = ann.get("/preferences").get_data(as_text=True)
    assert 'value="mention:email" checked' in page
    token = page.split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
    boxes = [f"{t}:{c}" for t in ("new_question", "new_answers", "broadcast", "producers") for c in ALL_ON]
    resp = ann.client.post("/preferences", data={"csrf_token": token, "on": [*boxes, "mention:in_app"]})
    assert resp.status_code == 302
    assert ann.get("/api/preferences").get_json()["channels"]["mention"] == {
        "in_app": True,
        "push": False,
        "email": False,
    }
    page = ann.get("/preferences").get_data(as_text=True)
    assert 'value="mention:email" checked' not in page and 'value="mention:in_app" checked' in page
    # No token, or a box that is not in the matrix: refused with a message, nothing saved.
    resp = ann.client.post("/preferences", data={"on": boxes})
    assert resp.status_code == 400 and "reload the page" in resp.get_data(as_text=True)
    resp = ann.client.post("/preferences", data={"csrf_token": token, "on": ["mention:sms"]})
    assert resp.status_code == 422 and "reload the page" in resp.get_data(as_text=True)
    assert ann.get("/api/preferences").get_json()["channels"]["new_answers"] == ALL_ON

"""Web Push through the public API and a push service of our own: what is stored, what is
refused, and what a browser would receive (decrypted with its own key), once."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from py_vapid import Vapid02
from sqlalchemy import select

from qa_notify.events import channels
from qa_notify.events.audiences import Users
from qa_notify.events.outbox import emit
from qa_notify.events.types import CustomEvent
from qa_notify.extensions import db
from qa_notify.live.leases import StreamQuota
from qa_notify.models import Notification, PushSubscription
from qa_notify.push import delivery

from .conftest import APIClient
from .pushservice import PushService, b64url


@pytest.fixture
def push_service(tmp_path):
    service = PushService(tmp_path).start()
    yield service
    service.stop()


def vapid_settings(push_service: PushService) -> dict:
    """The site's settings for a test push service: a fresh key pair, its host allowed, its CA trusted."""
    return {
        "VAPID_PRIVATE_KEY": push_service.site_key(),
        "VAPID_SUBJECT": "mailto:ops@example.com",
        "PUSH_ALLOWED_HOSTS": ("localhost",),
        "PUSH_CA_BUNDLE": str(push_service.cert_file),
        "PUSH_MIN_INTERVAL": 60,
    }


@pytest.fixture
def app_config(app_config, push_service):
    return {**app_config, **vapid_settings(push_service)}


def subscribe(client, browser, user_agent: str = "Mozilla/5.0 Chrome/131.0.0.0") -> dict:
    resp = client.post("/api/push/subscriptions", browser.to_json(), headers={"User-Agent": user_agent})
    assert resp.status_code in (200, 201), resp.get_json()
    return resp.get_json()


def ask(client, title: str = "How do SSE retries work?") -> int:
    return client.post("/api/questions", {"title": title}).get_json()["id"]


def answer(client, qid: int, body: str = "Use Last-Event-ID") -> None:
    assert client.post(f"/api/questions/{qid}/answers", {"body": body}).status_code == 201


# ---- subscriptions: the API ---------------------------------------------------------------


def test_a_device_is_stored_listed_and_removed(app, login_as, push_service):
    ann = login_as("ann")
    key = ann.get("/api/push/key").get_json()["public_key"]
    assert key == push_service.vapid_public_key
    browser = push_service.browser()
    created = ann.post("/api/push/subscriptions", browser.to_json(), headers={"User-Agent": "Firefox/133.0"})
    assert created.status_code == 201
    assert ann.post("/api/push/subscriptions", browser.to_json()).status_code == 200  # the same browser again
    [device] = ann.get("/api/push/subscriptions").get_json()["subscriptions"]
    assert device["id"] == created.get_json()["id"] and device["endpoint_host"] == f"localhost:{push_service.port}"
    assert "keys" not in device and "p256dh" not in json.dumps(device)
    # Nobody else can remove it.
    bob = login_as("bob")
    assert bob.delete(f"/api/push/subscriptions/{device['id']}").status_code == 404
    assert bob.get("/api/push/subscriptions").get_json()["subscriptions"] == []
    assert ann.delete(f"/api/push/subscriptions/{device['id']}").get_json() == {"removed": device["id"]}
    assert ann.get("/api/push/subscriptions").get_json()["subscriptions"] == []
    assert ann.delete(f"/api/push/subscriptions/{device['id']}").status_code == 404


def test_a_browser_signed_in_as_someone_else_takes_its_subscription_along(app, login_as, push_service):
    browser = push_service.browser()
    ann, bob = login_as("ann"), login_as("bob")
    subscribe(ann, browser)
    subscribe(bob, browser)
    assert ann.get("/api/push/subscriptions").get_json()["subscriptions"] == []
    assert len(bob.get("/api/push/subscriptions").get_json()["subscriptions"]) == 1


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/push/key"), ("GET", "/api/push/subscriptions"), ("POST", "/api/push/subscriptions"),
     ("DELETE", "/api/push/subscriptions/1")],
)  # fmt: skip
def test_push_endpoints_need_a_login(api, method, path):
    resp = api.client.open(path, method=method, json={}, headers={"X-CSRFToken": api.token()})
    assert resp.status_code == 401 and resp.get_json()["error"] == "login required"


def test_subscribing_needs_the_csrf_token(app, login_as, push_service):
    ann = login_as("ann")
    resp = ann.client.post("/api/push/subscriptions", json=push_service.browser().to_json())
    assert resp.status_code == 400 and "CSRF" in resp.get_json()["error"]


def _with(body: dict, **changes) -> dict:
    out = json.loads(json.dumps(body))
    for name, value in changes.items():
        if name in ("p256dh", "auth"):
            out["keys"][name] = value
        else:
            out[name] = value
    return out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"endpoint": "http://localhost/push/abc"}, "https"),
        ({"endpoint": "https://evil.example.com/push/abc"}, "not a known push service"),
        ({"endpoint": "https://localhost.evil.example.com/push/abc"}, "not a known push service"),
        ({"endpoint": "https://user:pw@localhost/push/abc"}, "plain https"),
        ({"endpoint": "https://localhost:99999/x"}, "not a valid URL"),
        ({"endpoint": 42}, "'endpoint'"),
        ({"endpoint": "https://localhost/" + "a" * 3000}, "at most 2048"),
        ({"keys": "nope"}, "'keys'"),
        ({"p256dh": b64url(b"\x04" + b"\x01" * 63)}, "65 bytes"),
        ({"p256dh": b64url(b"\x04" + b"\x01" * 64)}, "not a point on P-256"),
        ({"p256dh": "***"}, "base64url"),
        ({"auth": b64url(b"\x00" * 15)}, "16 bytes"),
        ({"auth": None}, "base64url"),
        ({"expirationTime": "tomorrow"}, "expirationTime"),
    ],
)
def test_a_subscription_the_site_will_not_push_to_is_a_422(app, login_as, push_service, change, message):
    ann = login_as("ann")
    body = _with(push_service.browser().to_json(), **change)
    resp = ann.post("/api/push/subscriptions", body)
    assert resp.status_code == 422, resp.get_json()
    assert message in resp.get_json()["error"]
    assert ann.get("/api/push/subscriptions").get_json()["subscriptions"] == []


def test_a_body_that_is_not_an_object_is_a_400(app, login_as):
    ann = login_as("ann")
    assert ann.post("/api/push/subscriptions", ["endpoint"]).status_code == 400


def test_a_user_keeps_at_most_20_devices_and_the_oldest_goes(app, login_as, push_service):
    ann = login_as("ann")
    ids = [subscribe(ann, push_service.browser())["id"] for _ in range(21)]
    listed = [d["id"] for d in ann.get("/api/push/subscriptions").get_json()["subscriptions"]]
    assert len(listed) == 20 and ids[0] not in listed and ids[-1] in listed


# ---- what is pushed ------------------------------------------------------------------------


def test_an_answer_reaches_the_away_askers_device_encrypted_and_signed(app, login_as, push_service):
    asker, bob = login_as("asker"), login_as("bob")
    phone, laptop = push_service.browser(), push_service.browser()
    subscribe(asker, phone)
    subscribe(asker, laptop)
    subscribe(bob, push_service.browser())  # bob is the actor: never told of his own answer
    qid = ask(asker)
    answer(bob, qid)
    received = push_service.wait_for(2)
    assert push_service.rejected == []
    assert sorted(r.token for r in received) == sorted([phone.token, laptop.token])
    [message] = push_service.messages_for(phone)
    assert message == {
        "title": "bob answered \u201cHow do SSE retries work?\u201d",
        "body": "Use Last-Event-ID",
        "url": f"/questions/{qid}#answer-1",
        "tag": f"new_answers:question:{qid}",
        "count": 1,
        "type": "new_answers",
    }
    headers = received[0].headers
    assert int(headers["ttl"]) == app.config["PUSH_TTL"] and len(headers["topic"]) == 32
    devices = asker.get("/api/push/subscriptions").get_json()["subscriptions"]
    assert all(d["last_used_at"] for d in devices)


def test_no_push_while_the_user_has_a_stream_open(app, login_as, push_service, r):
    asker, bob = login_as("asker"), login_as("bob")
    subscribe(asker, push_service.browser())
    qid = ask(asker)
    StreamQuota(r, limit=10, lease_seconds=60).claim(asker.user_id, "an-open-tab")
    answer(bob, qid)
    assert asker.get("/api/notifications").get_json()["unread_count"] == 1  # told live, and in the inbox
    assert push_service.hits == []


def test_a_muted_type_is_not_pushed(app, login_as, push_service):
    asker, bob = login_as("asker"), login_as("bob")
    subscribe(asker, push_service.browser())
    qid = ask(asker)
    assert asker.put("/api/preferences", {"muted": ["new_answers"]}).status_code == 200
    answer(bob, qid)
    assert push_service.hits == []


def test_a_burst_is_one_push_then_one_with_the_count_when_the_interval_ends(app, login_as, push_service, r):
    asker = login_as("asker")
    phone = push_service.browser()
    subscribe(asker, phone)
    qid = ask(asker)
    for name in ("bob", "carl", "dora"):
        answer(login_as(name), qid, f"{name} says hi")
    push_service.wait_for(1)
    [first] = push_service.messages_for(phone)
    assert first["count"] == 1 and first["title"].startswith("bob answered")
    # The gate held the others back and scheduled one push for when it opens.
    with app.app_context():
        r.delete(channels.push_gate(asker.user_id, f"new_answers:question:{qid}"))  # the interval is over
        newest = db.session.query(Notification).order_by(Notification.id.desc()).first().outbox_id
        delivery.deliver(newest, [asker.user_id], trailing=True)
    push_service.wait_for(2)
    second = push_service.messages_for(phone)[1]
    assert second["count"] == 3 and second["title"] == "dora and 2 others answered \u201cHow do SSE retries work?\u201d"
    assert second["tag"] == first["tag"] == f"new_answers:question:{qid}"


def test_a_device_the_push_service_says_is_gone_is_forgotten(app, login_as, push_service):
    asker, bob = login_as("asker"), login_as("bob")
    gone, lost, kept = push_service.browser(), push_service.browser(), push_service.browser()
    for browser in (gone, lost, kept):
        subscribe(asker, browser)
    push_service.scripted[gone.token] = [(410, {})]
    push_service.scripted[lost.token] = [(404, {})]
    answer(bob, ask(asker))
    push_service.wait_for(1)
    assert len(push_service.messages_for(kept)) == 1
    with app.app_context():
        endpoints = {s.endpoint for s in db.session.query(PushSubscription)}
    assert endpoints == {kept.endpoint}


def test_a_redirect_from_the_push_service_is_not_followed(app, login_as, push_service):
    asker, bob = login_as("asker"), login_as("bob")
    moved = push_service.browser()
    subscribe(asker, moved)
    elsewhere = push_service.browser()
    push_service.scripted[moved.token] = [(307, {"Location": elsewhere.endpoint})]
    answer(bob, ask(asker))
    assert push_service.hits == [f"/push/{moved.token}"]
    assert push_service.received == []
    assert len(asker.get("/api/push/subscriptions").get_json()["subscriptions"]) == 1


def test_a_deferred_push_is_retried_and_no_device_gets_it_twice(app, login_as, push_service):
    asker, bob = login_as("asker"), login_as("bob")
    busy, ready = push_service.browser(), push_service.browser()
    subscribe(asker, busy)
    subscribe(asker, ready)
    push_service.scripted[busy.token] = [(429, {"Retry-After": "7"}), (503, {})]
    answer(bob, ask(asker))  # in-process tasks do not retry: the worker would, as below
    assert len(push_service.messages_for(ready)) == 1 and push_service.messages_for(busy) == []
    with app.app_context():
        outbox_id = db.session.query(Notification).one().outbox_id
        assert delivery.deliver(outbox_id, [asker.user_id]).retry_after == 0.0  # the 503: backoff decides
        report = delivery.deliver(outbox_id, [asker.user_id])
    assert report.retry_after is None and report.delivered == 1
    assert len(push_service.messages_for(busy)) == 1 and len(push_service.messages_for(ready)) == 1


def test_the_retry_waits_as_long_as_retry_after_says(app, login_as, push_service):
    asker, bob = login_as("asker"), login_as("bob")
    busy = push_service.browser()
    subscribe(asker, busy)
    push_service.scripted[busy.token] = [(429, {"Retry-After": "7"})]
    answer(bob, ask(asker))
    assert push_service.hits == [f"/push/{busy.token}"] and push_service.received == []
    push_service.scripted[busy.token] = [(429, {"Retry-After": "7"})]
    with app.app_context():
        outbox_id = db.session.query(Notification).one().outbox_id
        assert delivery.deliver(outbox_id, [asker.user_id]).retry_after == 7.0
        assert delivery.deliver(outbox_id, [asker.user_id]).delivered == 1


def test_a_payload_over_4kb_is_trimmed_never_refused(app, login_as, push_service):
    ann = login_as("ann")
    phone = push_service.browser()
    subscribe(ann, phone)
    with app.app_context():
        emit(CustomEvent(name="deploy", data={"text": "\u00e9" * 6000}), Users((ann.user_id,)))
        db.session.commit()
    [received] = push_service.wait_for(1)
    assert push_service.rejected == [] and received.size <= 4096
    assert received.message["title"].startswith("deploy: \u00e9\u00e9") and received.message["title"].endswith("\u2026")


def test_an_announcement_is_pushed_to_everyone_with_a_device(app, login_as, push_service):
    admin, ann = login_as("root", role="admin"), login_as("ann")
    login_as("cy")  # no device: nothing to push, still in the inbox
    phone = push_service.browser()
    subscribe(ann, phone)
    assert admin.post("/api/admin/broadcast", {"message": "Maintenance at noon"}).status_code in (200, 201, 202)
    push_service.wait_for(1)
    [message] = push_service.messages_for(phone)
    assert message["title"] == "Announcement from root" and message["body"] == "Maintenance at noon"


def test_the_answer_is_posted_and_stored_while_the_push_service_is_down(app, login_as, push_service):
    asker, bob = login_as("asker"), login_as("bob")
    subscribe(asker, push_service.browser())
    push_service.stop()
    qid = ask(asker)
    answer(bob, qid)
    inbox = asker.get("/api/notifications").get_json()
    assert inbox["unread_count"] == 1 and inbox["items"][0]["payload"]["author"] == "bob"


def test_no_vapid_key_means_no_key_to_subscribe_with(app, login_as):
    app.config["VAPID_PRIVATE_KEY"] = None
    app.config["VAPID_KEY_FILE"] = "/nonexistent/vapid.pem"
    resp = login_as("ann").get("/api/push/key")
    assert resp.status_code == 503 and "VAPID" in resp.get_json()["error"]


def test_the_service_worker_is_served_for_the_whole_site(app, api):
    resp = api.client.get("/sw.js")
    assert resp.status_code == 200 and resp.headers["Service-Worker-Allowed"] == "/"
    assert resp.mimetype == "text/javascript" and b"showNotification" in resp.data


def test_make_run_writes_a_key_file_once_and_the_site_signs_with_it(app, login_as, tmp_path):
    from qa_notify.push.vapid import ensure_key_file

    key_file = tmp_path / "instance" / "vapid_private.pem"
    assert ensure_key_file(key_file) is True
    first = key_file.read_bytes()
    assert ensure_key_file(key_file) is False and key_file.read_bytes() == first  # never replaced
    assert key_file.stat().st_mode & 0o777 == 0o600
    app.config.update(VAPID_PRIVATE_KEY=None, VAPID_KEY_FILE=str(key_file))
    public = Vapid02.from_pem(first).public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    assert login_as("ann").get("/api/push/key").get_json() == {"public_key": b64url(public)}


def test_without_a_vapid_key_nothing_is_pushed_and_answers_still_arrive(app, login_as, push_service):
    asker, bob = login_as("asker"), login_as("bob")
    subscribe(asker, push_service.browser())
    app.config.update(VAPID_PRIVATE_KEY=None, VAPID_KEY_FILE="/nonexistent/vapid.pem")
    answer(bob, ask(asker))
    assert push_service.hits == []
    assert asker.get("/api/notifications").get_json()["unread_count"] == 1


@pytest.fixture
def fuzzer(login_as):
    return login_as("fuzzer")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    endpoint=st.one_of(
        st.text(max_size=80), st.builds(lambda tail: "https://localhost/" + tail, st.text(max_size=40)), st.integers()
    ),
    p256dh=st.one_of(st.text(max_size=100), st.binary(min_size=60, max_size=70).map(b64url), st.none()),
    auth=st.one_of(st.text(max_size=30), st.binary(min_size=14, max_size=18).map(b64url), st.lists(st.integers())),
    expiration=st.one_of(
        st.none(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=5)
    ),
)
def test_any_subscription_body_is_stored_or_a_422_never_a_500(fuzzer, endpoint, p256dh, auth, expiration):
    body = {"endpoint": endpoint, "expirationTime": expiration, "keys": {"p256dh": p256dh, "auth": auth}}
    resp = fuzzer.post("/api/push/subscriptions", body)
    assert resp.status_code in (200, 201, 422), resp.get_data(as_text=True)[:300]
    if resp.status_code == 422:
        assert isinstance(resp.get_json()["error"], str)


def test_a_push_is_worded_in_the_readers_language(app, login_as, push_service):
    asker, bob = login_as("asker"), login_as("bob")
    phone = push_service.browser()
    subscribe(asker, phone)
    assert asker.put("/api/preferences", {"locale": "zh_CN"}).status_code == 200
    answer(bob, ask(asker, "推送用什么语言？"))
    push_service.wait_for(1)
    [message] = push_service.messages_for(phone)
    assert message["title"] == "bob回答了“推送用什么语言？”"


def test_push_turned_off_for_a_type_keeps_it_in_the_inbox_but_sends_nothing(app, login_as, push_service):
    asker, bob = login_as("asker"), login_as("bob")
    subscribe(asker, push_service.browser())
    qid = ask(asker)
    resp = asker.put("/api/preferences", {"channels": {"new_answers": {"push": False}}})
    assert resp.status_code == 200 and resp.get_json()["channels"]["new_answers"]["push"] is False
    answer(bob, qid)
    assert asker.get("/api/notifications").get_json()["unread_count"] == 1
    assert push_service.hits == []


def test_nothing_is_pushed_while_snoozed_then_one_summary_push(app, login_as, push_service):
    asker = login_as("asker")
    phone = push_service.browser()
    subscribe(asker, phone)
    qid = ask(asker, "Quiet please")
    assert asker.post("/api/preferences/snooze", {"minutes": 60}).status_code == 200
    for name in ("bob", "carl"):
        answer(login_as(name), qid)
    assert push_service.hits == []  # quiet: in the inbox, not pushed
    assert asker.delete("/api/preferences/snooze").status_code == 200
    with app.app_context():
        assert app.extensions["celery"].tasks["workers.track_quiet_periods"].apply().get() == 1
    [message] = push_service.messages_for(phone)
    assert message["title"] == "2 updates while notifications were paused"
    assert message["count"] == 2 and message["url"] == "/inbox" and message["tag"] == "quiet-summary"


def test_signing_out_of_a_browser_stops_pushes_to_it(app, login_as, push_service):
    """A shared browser: ann subscribes it, signs out; nothing of hers may pop up there any more.
    Her other browser (another sign-in) keeps its subscription."""
    ann = login_as("ann")
    subscribe(ann, push_service.browser())
    other = APIClient(app.test_client())
    other.login("ann")
    subscribe(other, push_service.browser())
    assert len(ann.get("/api/push/subscriptions").get_json()["subscriptions"]) == 2
    assert ann.post("/api/logout").status_code == 200
    [left] = other.get("/api/push/subscriptions").get_json()["subscriptions"]
    with app.app_context():
        rows = db.session.scalars(select(PushSubscription)).all()
        assert [row.id for row in rows] == [left["id"]]

"""Web Push in Chromium: the preferences card subscribes this browser (its subscription posted
as the page posts it), the site's worker pushes an answer to our own push service, and the
service worker, handed that push through the DevTools protocol, shows the notification
(docs/push-notification.png)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from ..live import REPO
from ..pushservice import PushService
from .conftest import answer, ask, running_stack, wait_for_streams, wait_until

pytestmark = pytest.mark.browser
DOCS = REPO / "docs"

# Headless Chromium has no push service to subscribe with: PushManager.subscribe answers, as a
# browser's would, with a subscription to our push service (the test puts its JSON in
# window.__pushSubscription) and records the applicationServerKey the page gave it.
FAKE_SUBSCRIBE = """
(() => {
  if (!window.PushManager) return;
  PushManager.prototype.subscribe = function (options) {
    const key = new Uint8Array(options.applicationServerKey);
    window.__subscribedWith = btoa(String.fromCharCode(...key)).replace(/\\+/g, "-").replace(/\\//g, "_").replace(/=+$/, "");
    const json = window.__pushSubscription;
    return Promise.resolve({ endpoint: json.endpoint, toJSON: () => json, unsubscribe: () => Promise.resolve(true) });
  };
})();
"""

NOTIFICATIONS = """
() => navigator.serviceWorker.getRegistration("/").then(r => r ? r.getNotifications() : [])
  .then(ns => ns.map(n => ({ title: n.title, body: n.body, tag: n.tag, url: n.data && n.data.url })))
"""

# In the service worker: the click the browser fires on the notification shown.
CLICK_NOTIFICATION = """
async () => {
  const [notification] = await self.registration.getNotifications();
  self.dispatchEvent(new NotificationEvent("notificationclick", { notification }));
}
"""


@pytest.fixture(scope="module")
def push_service(tmp_path_factory):
    service = PushService(tmp_path_factory.mktemp("push")).start()
    yield service
    service.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, push_service):
    """The browser tests' stack, with Web Push on: a VAPID key, our push service allowed and trusted."""
    settings = {
        "VAPID_PRIVATE_KEY": push_service.site_key(),
        "PUSH_ALLOWED_HOSTS": "localhost",
        "PUSH_CA_BUNDLE": str(push_service.cert_file),
    }
    with running_stack(tmp_path_factory.mktemp("push-stack"), **settings) as web:
        yield web


@pytest.fixture(autouse=True)
def _own_servers_only():
    if os.environ.get("REDIS_URL") or os.environ.get("DATABASE_URL"):
        pytest.skip("the push browser tests start their own Redis and database")


def test_the_card_subscribes_this_browser_and_its_service_worker_shows_the_push(browser, stack, member, push_service):
    ann, bob = member("ann"), member("bob")
    phone = push_service.browser()
    context = ann.browser_context(browser)
    context.grant_permissions(["notifications"], origin=stack.url)
    context.add_init_script(FAKE_SUBSCRIBE)
    prefs = context.new_page()
    prefs.goto("/preferences")
    prefs.wait_for_selector('#push-notifications[data-state="off"]')
    prefs.evaluate("json => { window.__pushSubscription = json; }", phone.to_json())
    prefs.get_by_role("button", name="Turn on push on this device").click()
    prefs.wait_for_selector('#push-notifications[data-state="on"]')
    assert prefs.evaluate("window.__subscribedWith") == push_service.vapid_public_key
    device = prefs.locator(".push-device")
    assert device.count() == 1 and "(this browser)" in device.inner_text()
    scope = prefs.evaluate("() => navigator.serviceWorker.ready.then(r => r.scope)")
    assert scope == stack.url + "/"

    # Every tab closed: the next answer is pushed (our push service decrypts it).
    qid = ask(ann, "Where do pushes go?")
    prefs.close()
    wait_for_streams(stack, 0)
    answer(bob, qid, "To the push service")
    [received] = push_service.wait_for(1, timeout=60)
    assert push_service.rejected == []

    # What the push service got, handed to the service worker as Chromium's push would be.
    page = context.new_page()
    page.goto("/sw.js")  # a page of the site's origin that opens no stream
    cdp = context.new_cdp_session(page)
    registrations: list[dict] = []
    cdp.on("ServiceWorker.workerRegistrationUpdated", lambda e: registrations.extend(e["registrations"]))
    cdp.send("ServiceWorker.enable")
    # Playwright hands CDP events over while it waits in a call of its own: poll in one.
    wait_until(
        lambda: page.wait_for_timeout(50) or any(not r["isDeleted"] for r in registrations),
        timeout=15,
        what="the service worker's registration",
    )
    registration_id = next(r["registrationId"] for r in registrations if not r["isDeleted"])
    data = json.dumps(received.message)
    cdp.send("ServiceWorker.deliverPushMessage", {"origin": stack.url, "registrationId": registration_id, "data": data})
    wait_until(lambda: page.evaluate(NOTIFICATIONS), timeout=15, what="the notification")
    [shown] = page.evaluate(NOTIFICATIONS)
    assert shown == {
        "title": f"{bob.username} answered \u201cWhere do pushes go?\u201d",
        "body": "To the push service",
        "tag": f"qa-notify:new_answers new_answers:question:{qid}",  # as the page's desktop notification
        "url": received.message["url"],
    }
    assert received.message["url"].startswith(f"/questions/{qid}")

    # A later push of the same group replaces the notification (same tag), with the count.
    later = {**received.message, "title": "carl and 1 other answered \u201cWhere do pushes go?\u201d", "count": 2}
    cdp.send(
        "ServiceWorker.deliverPushMessage",
        {"origin": stack.url, "registrationId": registration_id, "data": json.dumps(later)},
    )
    wait_until(lambda: page.evaluate(NOTIFICATIONS)[0]["title"].startswith("carl"), timeout=15, what="the update")
    assert len(page.evaluate(NOTIFICATIONS)) == 1
    render_notification(context.new_page(), shown, DOCS / "push-notification.png")

    # A click on it takes a tab of the site to the question. (CDP cannot click an OS
    # notification: the service worker is handed the click event the browser would fire.)
    tab = context.new_page()
    tab.goto("/")
    [worker] = context.service_workers
    worker.evaluate(CLICK_NOTIFICATION)
    tab.wait_for_url(re.compile(rf"/questions/{qid}#answer-\d+$"), timeout=15_000)
    wait_until(lambda: page.evaluate(NOTIFICATIONS) == [], timeout=15, what="the notification to close")


def test_removing_a_device_on_the_card_stops_pushes_to_it(browser, stack, member, push_service):
    ann = member("ann")
    other = push_service.browser()
    resp = ann.api.post(
        "/api/push/subscriptions", json=other.to_json(), headers={"User-Agent": "Mozilla/5.0 Firefox/133.0"}
    )
    assert resp.status_code == 201
    context = ann.browser_context(browser)
    prefs = context.new_page()
    prefs.goto("/preferences")
    prefs.wait_for_selector(".push-device")
    assert "Firefox/133.0" in prefs.locator(".push-device").inner_text()
    prefs.locator(".push-device").get_by_role("button", name="Remove").click()
    prefs.wait_for_selector(".push-empty", state="visible")
    assert ann.api.get("/api/push/subscriptions").json()["subscriptions"] == []
    context.close()


def render_notification(page, shown: dict, path: Path) -> None:
    """Draw the notification as the desktop shows it (headless Chromium has no desktop to capture)."""
    page.set_content(
        """<style>
          body { margin: 0; padding: 24px; background: #2b2f36; font: 14px system-ui, sans-serif; }
          .n { width: 360px; background: #f7f7f8; border-radius: 10px; padding: 12px 14px;
               box-shadow: 0 6px 20px rgba(0,0,0,.35); color: #1d1f23; }
          .app { font-size: 12px; color: #5b6068; margin-bottom: 6px; }
          .t { font-weight: 600; margin-bottom: 4px; }
          .b { color: #3a3f47; }
        </style>
        <div class="n"><div class="app"></div><div class="t"></div><div class="b"></div></div>"""
    )
    page.evaluate(
        """([shown, origin]) => {
          document.querySelector(".app").textContent = "Chromium \u00b7 " + origin;
          document.querySelector(".t").textContent = shown.title;
          document.querySelector(".b").textContent = shown.body;
        }""",
        [shown, "127.0.0.1 (qa_notify)"],
    )
    page.locator(".n").screenshot(path=str(path))

"""What a person sees: live toasts, the badge, one connection per browser, sign-out."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from .conftest import ask, open_tab, wait_for_badge, wait_for_streams, wait_until

pytestmark = pytest.mark.browser
DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_answer_shows_a_toast_on_the_askers_page(browser, stack, member):
    ann, bob = member("ann"), member("bob")
    context = ann.browser_context(browser)
    page = open_tab(context)
    # The page's stream must be open before the answer: a first connection starts "now". (The
    # outbox drain delivers fast enough to beat a page that is still connecting.) How fast a
    # toast comes is measured by the latency benchmark, not here.
    wait_for_streams(stack, 1)
    qid = ask(ann, "How do I use server-sent events?")
    bob.api.post(f"/api/questions/{qid}/answers", json={"body": "Use an EventSource and addEventListener."})
    toast = page.wait_for_selector('.toast[data-type="new_answers"]', timeout=10_000)
    assert bob.username in toast.inner_text() and "EventSource" in toast.inner_text()
    assert page.locator("#unread-badge").get_attribute("data-count") == "1"
    DOCS.mkdir(exist_ok=True)
    page.screenshot(path=str(DOCS / "screenshot-toast.png"))
    context.close()


def test_three_tabs_share_one_stream_and_show_the_toast_once(browser, stack, member):
    ann, bob = member("ann"), member("bob")
    context = ann.browser_context(browser)
    tabs = [open_tab(context) for _ in range(3)]
    wait_for_streams(stack, 1)
    qid = ask(ann, "Three tabs?")
    bob.api.post(f"/api/questions/{qid}/answers", json={"body": "one toast please"})
    for tab in tabs:  # every tab's badge follows
        wait_for_badge(tab, 1, timeout=3_000)
    time.sleep(0.5)
    assert sum(tab.locator(".toast").count() for tab in tabs) == 1
    assert stack.metric("qa_notify_open_streams") == 1

    # Closing the leader hands the connection to another tab, which still receives.
    tabs[0].close()
    wait_for_streams(stack, 1, timeout=8)
    other = ask(ann, "After the leader left?")  # a second unread group: the badge says 2
    bob.api.post(f"/api/questions/{other}/answers", json={"body": "after the leader left"})
    for tab in tabs[1:]:
        wait_for_badge(tab, 2, timeout=5_000)
    context.close()


def test_badge_matches_the_inbox_after_mark_all_read_in_another_tab(browser, stack, member):
    ann, bob = member("ann"), member("bob")
    qid = ask(ann, "Badge?")
    for i in range(3):
        bob.api.post(f"/api/questions/{qid}/answers", json={"body": f"answer {i}"})
    context = ann.browser_context(browser)
    home = open_tab(context)
    wait_for_badge(home, 1, timeout=5_000)  # three answers to one question: one unread group
    wait_until(lambda: ann.api.get("/api/notifications").json()["items"][0]["count"] == 3, what="all three answers")
    inbox = open_tab(context, "/inbox")
    assert inbox.locator("li.notification.unread").count() == 1
    assert inbox.locator("li.notification.unread").get_attribute("data-count") == "3"
    DOCS.mkdir(exist_ok=True)
    inbox.screenshot(path=str(DOCS / "screenshot-inbox.png"))
    inbox.get_by_role("button", name="Mark all read").click()
    inbox.wait_for_load_state()
    wait_for_badge(home, 0, timeout=3_000)
    assert ann.api.get("/api/notifications/unread_count").json()["unread_count"] == 0
    context.close()


def test_html_in_a_question_title_shows_literally(browser, stack, member):
    ann, bob = member("ann"), member("bob")
    context = ann.browser_context(browser)
    page = open_tab(context)
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    evil = "<img src=x onerror=alert(1)>"
    qid = ask(ann, evil)
    bob.api.post(f"/api/questions/{qid}/answers", json={"body": "<script>alert(2)</script>"})
    toast = page.wait_for_selector('.toast[data-type="new_answers"]', timeout=3_000)
    assert evil in toast.inner_text()
    assert "<script>alert(2)</script>" in toast.inner_text()
    assert page.locator("#toasts img").count() == 0
    page.goto(f"/questions/{qid}")
    assert evil in page.locator("body").inner_text()
    assert dialogs == []
    context.close()


def test_logout_in_one_tab_signs_out_every_tab(browser, stack, member):
    ann = member("ann")
    context = ann.browser_context(browser)
    tabs = [open_tab(context) for _ in range(2)]
    tabs[1].get_by_role("button", name="Log out").click()
    tabs[0].wait_for_selector('#live-status[data-state="signed-out"]', timeout=5_000)
    context.close()


def test_admin_broadcast_reaches_a_members_page(browser, stack, member):
    admin, ann = member("root", "admin"), member("ann")
    context = ann.browser_context(browser)
    page = open_tab(context)
    resp = admin.api.post("/api/admin/broadcast", json={"message": "Maintenance at noon"})
    assert resp.status_code == 202
    toast = page.wait_for_selector('.toast[data-type="broadcast"]', timeout=3_000)
    assert "Maintenance at noon" in toast.inner_text()
    context.close()


def test_a_broadcast_missed_while_the_page_was_closed_shows_once_when_it_opens(browser, stack, member):
    admin, ann = member("root", "admin"), member("ann")
    context = ann.browser_context(browser)
    page = open_tab(context)
    wait_for_streams(stack, 1)
    assert admin.api.post("/api/admin/broadcast", json={"message": "First"}).status_code == 202
    page.wait_for_selector('.toast[data-type="broadcast"]', timeout=5_000)
    page.close()  # its position (the broadcast's id) stays in the browser's storage
    wait_for_streams(stack, 0)
    assert admin.api.post("/api/admin/broadcast", json={"message": "Second, while away"}).status_code == 202
    unread = lambda: ann.api.get("/api/notifications/unread_count").json()["unread_count"]  # noqa: E731
    wait_until(lambda: unread() == 2, what="the second broadcast in the inbox")
    page = open_tab(context)  # reconnects from that position: the missed one replays, the first does not
    page.wait_for_selector('.toast[data-type="broadcast"]', timeout=5_000)
    time.sleep(1)
    toasts = [toast.inner_text() for toast in page.locator(".toast").all()]
    assert len(toasts) == 1 and "Second, while away" in toasts[0], toasts
    wait_for_badge(page, 2)
    context.close()

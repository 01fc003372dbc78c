"""Grouped notifications in the page: a burst is one toast, the badge counts groups, and any
producer's type shows up."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from .conftest import answer, ask, open_tab, produce, wait_for_badge, wait_until

pytestmark = pytest.mark.browser
DOCS = Path(__file__).resolve().parents[2] / "docs"

# Every value the badge takes, so a test can tell a badge that overshot and was corrected
# from one that was always right.
BADGE_HISTORY = """
window.__badgeSeen = [];
document.addEventListener("DOMContentLoaded", () => {
  const badge = document.getElementById("unread-badge");
  if (!badge) return;
  new MutationObserver(() => window.__badgeSeen.push(Number(badge.dataset.count)))
    .observe(badge, { attributes: true, attributeFilter: ["data-count"] });
});
"""


def unread_groups(member) -> int:
    return member.api.get("/api/notifications/unread_count").json()["unread_count"]


def toasts(page, title: str):
    return page.locator(".toast", has_text=title)


def test_ten_answers_in_a_second_are_one_toast_counting_ten(browser, stack, member):
    ann = member("ann")
    answerers = [member(name) for name in ("bob", "carol", "dave", "erin", "frank")]
    other = ask(ann, "Which port does Valkey use?")
    answer(answerers[1], other, "6379, like Redis.")
    answer(answerers[2], ask(answerers[2], "Do mentions work?"), f"@{ann.username} have a look at this one")
    wait_until(lambda: unread_groups(ann) == 2, what="the answer and the mention")
    context = ann.browser_context(browser)
    page = open_tab(context)
    qid = ask(ann, "How do SSE retries work?")

    for i in range(10):  # back to back: well inside a second on any machine that runs this suite
        answer(answerers[i % 5], qid, f"Answer {i + 1}: the browser waits for the retry hint.")

    page.wait_for_selector('.toast[data-type="new_answers"][data-count="10"]', timeout=10_000)
    assert toasts(page, "How do SSE retries work?").count() <= 2
    coalesced = toasts(page, "How do SSE retries work?").last
    assert re.search(r"\S+ and 4 others answered \u201cHow do SSE retries work\?\u201d", coalesced.inner_text())
    assert coalesced.locator(".toast-count").inner_text() == "10"
    assert "10 new answers" in coalesced.inner_text()
    wait_for_badge(page, 3, timeout=3_000)  # the ten answers are one more unread group
    assert unread_groups(ann) == 3
    DOCS.mkdir(exist_ok=True)
    page.screenshot(path=str(DOCS / "toast-coalesced.png"))

    inbox = open_tab(context, "/inbox")
    grouped = inbox.locator("li.notification.unread").first
    assert grouped.get_attribute("data-count") == "10"
    assert "and 4 others answered" in grouped.inner_text()
    inbox.screenshot(path=str(DOCS / "inbox-grouped.png"), full_page=True)
    context.close()


def test_the_badge_counts_groups_and_agrees_across_tabs(browser, stack, member):
    ann, bob, carol = member("ann"), member("bob"), member("carol")
    first, second = ask(ann, "Groups: first"), ask(ann, "Groups: second")
    context = ann.browser_context(browser)
    context.add_init_script(BADGE_HISTORY)
    tabs = [open_tab(context), open_tab(context)]

    answer(bob, first, "one")
    for tab in tabs:
        wait_for_badge(tab, 1)
    answer(carol, first, "two: same group")
    wait_until(lambda: sum(t.locator('.toast[data-count="2"]').count() for t in tabs) == 1, what="the toast to count 2")
    time.sleep(1.5)  # past the leader's re-read of the server's count
    for tab in tabs:  # a second part of an unread group is not one more unread group, not even briefly
        assert tab.evaluate("window.__badgeSeen").count(2) == 0, tab.evaluate("window.__badgeSeen")
    answer(bob, second, "three: a second group")
    for tab in tabs:
        wait_for_badge(tab, 2)
    assert unread_groups(ann) == 2

    # Reading a group (in another browser, through the API) reads all its parts, in every tab.
    item = next(i for i in ann.api.get("/api/notifications").json()["items"] if i["payload"]["question_id"] == first)
    ann.api.post("/api/notifications/read", json={"ids": [item["id"]]})
    for tab in tabs:
        wait_for_badge(tab, 1)
    # A new answer to the read group starts a new group.
    answer(carol, first, "four: after the read")
    for tab in tabs:
        wait_for_badge(tab, 2)
    assert unread_groups(ann) == 2
    time.sleep(1.0)  # the leader's re-read, if any, has landed
    for tab in tabs:
        # Never one more per event: the badge went 1, 2, 1, 2 and nothing above the groups.
        assert max(tab.evaluate("window.__badgeSeen")) == 2, tab.evaluate("window.__badgeSeen")
        assert tab.locator("#unread-badge").get_attribute("data-count") == "2"
    context.close()


def test_a_producers_deploy_event_shows_as_a_toast(browser, stack, member):
    ann = member("ann")
    context = ann.browser_context(browser)
    page = open_tab(context)
    # The README's example, through the qa:ingest Redis stream.
    produce(stack, {"user": ann.username, "type": "deploy", "payload": {"text": "v2 is out"}})
    toast = page.wait_for_selector('.toast[data-type="deploy"]', timeout=5_000)
    assert toast.inner_text().startswith("deploy: v2 is out")
    assert "(via external)" in toast.inner_text()
    wait_for_badge(page, 1)
    context.close()


def test_html_in_a_producers_title_shows_literally(browser, stack, member):
    ann = member("ann")
    context = ann.browser_context(browser)
    page = open_tab(context)
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    evil = '<img src=x onerror=alert(1)><a href="javascript:alert(2)">x</a>'
    payload = {"title": evil, "url": "javascript:alert(3)"}
    produce(stack, {"user": ann.username, "type": "ci_report", "payload": payload})
    toast = page.wait_for_selector('.toast[data-type="ci_report"]', timeout=5_000)
    assert f"ci_report: {evil}" in toast.inner_text()
    assert page.locator("#toasts img").count() == 0
    assert page.locator("#toasts a").count() == 0  # not a site path: no link at all
    toast.click()
    assert page.url.rstrip("/") == stack.url
    assert dialogs == []
    context.close()

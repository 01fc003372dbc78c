"""Inbox triage in Chromium: the filters, mark unread, archive, and the badge of another tab
following when a question page is viewed."""

from __future__ import annotations

import pytest

from .conftest import answer, ask, open_tab, wait_for_badge, wait_until

pytestmark = pytest.mark.browser
WAIT_MS = 10_000  # generous: the machine may be busy


def unread_items(member) -> int:
    return member.api.get("/api/notifications/unread_count").json()["unread_count"]


def shown(page) -> list[str]:
    """The headlines of the inbox items the page shows, top to bottom."""
    return [h.strip() for h in page.locator("ol.inbox li.notification .headline").all_inner_texts()]


def inbox_with_three_items(member):
    """ann: an unread answer to "Alpha", a read answer to "Beta", an unread mention by carol."""
    ann, bob, carol = member("ann"), member("bob"), member("carol")
    alpha, beta = ask(ann, "Alpha"), ask(ann, "Beta")
    answer(bob, alpha, "alpha answer")
    answer(bob, beta, "beta answer")
    ask(carol, f"Gamma for @{ann.username}")
    wait_until(lambda: unread_items(ann) == 3, timeout=15, what="three unread items")
    items = ann.api.get("/api/notifications").json()["items"]
    beta_item = next(i for i in items if i["payload"].get("question_title") == "Beta")
    assert ann.api.post("/api/notifications/read", json={"ids": [beta_item["id"]]}).status_code == 200
    return ann, bob, carol


def test_filter_to_unread_then_by_type(browser, stack, member):
    ann, bob, carol = inbox_with_three_items(member)
    context = ann.browser_context(browser)
    page = open_tab(context, "/inbox")
    assert len(shown(page)) == 3

    page.check(".inbox-filters input[name=unread]")
    page.click(".inbox-filters button[type=submit]")
    page.wait_for_url("**/inbox?unread=1**")
    assert shown(page) == [
        f"{carol.username} mentioned you in \u201cGamma for @{ann.username}\u201d",
        f"{bob.username} answered \u201cAlpha\u201d",
    ]

    page.select_option(".inbox-filters select[name=type]", "new_answers")
    page.click(".inbox-filters button[type=submit]")
    page.wait_for_url("**type=new_answers**")
    assert shown(page) == [f"{bob.username} answered \u201cAlpha\u201d"]
    assert page.locator(".inbox-filters input[name=unread]").is_checked()  # the filters combine

    page.click("text=Clear filters")
    page.wait_for_selector("ol.inbox li.notification >> nth=2", timeout=WAIT_MS)
    assert len(shown(page)) == 3
    context.close()


def test_mark_unread_and_archive_move_the_badge_in_every_tab(browser, stack, member):
    ann, bob, _ = inbox_with_three_items(member)
    context = ann.browser_context(browser)
    other = open_tab(context, "/")
    page = open_tab(context, "/inbox")
    wait_for_badge(other, 2, timeout=WAIT_MS)

    beta = page.locator("li.notification", has_text="\u201cBeta\u201d")
    assert "unread" not in (beta.get_attribute("class") or "")
    beta.locator("button", has_text="Mark unread").click()
    page.wait_for_selector("text=Marked 1 notification unread.", timeout=WAIT_MS)
    assert "unread" in (page.locator("li.notification", has_text="\u201cBeta\u201d").get_attribute("class") or "")
    wait_for_badge(page, 3, timeout=WAIT_MS)
    wait_for_badge(other, 3, timeout=WAIT_MS)  # told by the read event (unread: true)

    page.locator("li.notification", has_text="\u201cAlpha\u201d").locator("button", has_text="Archive").click()
    page.wait_for_selector("text=Archived 1 notification.", timeout=WAIT_MS)
    assert not any("Alpha" in h for h in shown(page))
    wait_for_badge(page, 2, timeout=WAIT_MS)
    wait_for_badge(other, 2, timeout=WAIT_MS)  # archiving read it

    page.check(".inbox-filters input[name=archived]")
    page.click(".inbox-filters button[type=submit]")
    page.wait_for_url("**archived=1**")
    assert shown(page) == [f"{bob.username} answered \u201cAlpha\u201d"]
    assert unread_items(ann) == 2
    context.close()


def test_viewing_a_question_updates_the_badge_of_another_tab(browser, stack, member):
    ann, bob = member("ann"), member("bob")
    qid = ask(ann, "Seen elsewhere")
    answer(bob, qid, "one")
    answer(bob, qid, "two")
    answer(bob, ask(ann, "Still unread"), "three")
    wait_until(lambda: unread_items(ann) == 2, timeout=15, what="two unread items")
    context = ann.browser_context(browser)
    watching = open_tab(context, "/")  # opened first: the tab holding the stream
    wait_for_badge(watching, 2, timeout=WAIT_MS)
    reader = open_tab(context, "/")
    reader.goto(f"/questions/{qid}")
    wait_for_badge(reader, 1, timeout=WAIT_MS)  # its own page, rendered after the read
    wait_for_badge(watching, 1, timeout=WAIT_MS)  # the other tab, told live
    assert unread_items(ann) == 1
    context.close()

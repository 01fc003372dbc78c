"""Mute a question from its toast (issue 18): one click, and its next answer neither toasts nor lands in the inbox."""

from __future__ import annotations

import pytest

from .conftest import answer, ask, open_tab, wait_until

pytestmark = pytest.mark.browser


def inbox_titles(member) -> list[tuple[str, int]]:
    """(question title, count) of each inbox item, newest first."""
    items = member.api.get("/api/notifications").json()["items"]
    return [(item["payload"]["question_title"], item["count"]) for item in items]


def test_mute_this_question_from_a_toast_stops_its_answers(browser, stack, member):
    ann, bob, carol = member("ann"), member("bob"), member("carol")
    noisy, quiet = ask(ann, "A noisy thread"), ask(ann, "A quiet thread")
    context = ann.browser_context(browser)
    page = open_tab(context)

    answer(bob, noisy, "first answer")
    toast = page.locator(".toast", has_text="A noisy thread")
    toast.wait_for(timeout=10_000)
    toast.get_by_role("button", name="Mute this question").click()

    toast.wait_for(state="detached", timeout=5_000)  # it goes once the server said muted
    assert ann.api.get(f"/api/questions/{noisy}/watch").json()["level"] == "muted"

    answer(bob, noisy, "second answer, unheard")
    answer(carol, quiet, "an answer that is heard")  # posted after: once it toasts, the other was delivered
    page.locator(".toast", has_text="A quiet thread").wait_for(timeout=10_000)
    wait_until(lambda: ("A quiet thread", 1) in inbox_titles(ann), what="the quiet thread's answer in the inbox")
    assert page.locator(".toast", has_text="A noisy thread").count() == 0
    assert inbox_titles(ann) == [("A quiet thread", 1), ("A noisy thread", 1)]  # the first answer stays
    context.close()

"""The preferences matrix in a real browser: the in-app column decides what pops up, at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import answer, ask, open_tab, wait_for_badge, wait_for_streams

pytestmark = pytest.mark.browser
DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_in_app_off_counts_in_the_badge_but_shows_no_toast(browser, stack, member):
    ann, bob = member("ann"), member("bob")
    context = ann.browser_context(browser)
    prefs = context.new_page()
    prefs.goto("/preferences")
    box = prefs.get_by_label("New answers to questions I follow (including my own questions): In the site")
    assert box.is_checked()
    box.uncheck()
    prefs.get_by_role("button", name="Save", exact=True).click()
    prefs.wait_for_selector("text=Saved.")
    assert not prefs.get_by_label(
        "New answers to questions I follow (including my own questions): In the site"
    ).is_checked()
    DOCS.mkdir(exist_ok=True)
    prefs.locator("#channels").screenshot(path=str(DOCS / "preferences-matrix.png"))
    prefs.close()

    page = open_tab(context)
    wait_for_streams(stack, 1)
    quiet = ask(ann, "Answers here stay quiet")
    answer(bob, quiet, "an answer you hear of in the inbox only")
    wait_for_badge(page, 1, timeout=10_000)
    # A mention (still on) after it: once its toast is up, the answer before it was handled.
    loud = ask(ann, "Mentions still pop up")
    answer(bob, loud, f"@{ann.username} have a look")
    page.wait_for_selector('.toast[data-type="mention"]', timeout=10_000)
    assert page.locator('.toast[data-type="new_answers"]').count() == 0
    wait_for_badge(page, 2, timeout=5_000)

    # Turned back on from elsewhere (the API, another device): this open page follows at once.
    resp = ann.api.put("/api/preferences", json={"channels": {"new_answers": {"in_app": True}}})
    assert resp.status_code == 200, resp.text
    answer(bob, quiet, "this one pops up")
    toast = page.wait_for_selector('.toast[data-type="new_answers"]', timeout=10_000)
    assert "this one pops up" in toast.inner_text()
    context.close()

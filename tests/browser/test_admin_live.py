"""The admin's live page in Chromium: its numbers move, without a reload, as streams open and answers come."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import ask, open_tab, wait_until

pytestmark = pytest.mark.browser
DOCS = Path(__file__).resolve().parents[2] / "docs"


def figure(page, name: str) -> str:
    return page.locator(f'[data-figure="{name}"]').inner_text()


def test_live_page_follows_streams_and_answers_without_a_reload(browser, stack, member):
    admin, ann, bob, carol = member("root", "admin"), member("ann"), member("bob"), member("carol")
    context = admin.browser_context(browser)
    page = open_tab(context, "/admin/live")  # the admin's own page holds a stream too
    page.wait_for_selector('#live-updated[data-state="live"]', timeout=10_000)
    loaded = page.evaluate("performance.timeOrigin")

    def streams() -> int:
        return int(figure(page, "open-streams").replace(",", ""))

    wait_until(lambda: streams() >= 1, what="the admin's own stream")
    before = streams()
    assert page.locator("#live-processes tr").count() == 1  # the stack's one web process
    assert figure(page, "latency-p50") == "–"  # nothing posted while the page watched

    others = [ann.browser_context(browser), bob.browser_context(browser)]
    tabs = [open_tab(others[0]), open_tab(others[0]), open_tab(others[1])]  # ann's two tabs share one stream
    wait_until(lambda: streams() == before + 2, timeout=10, what=f"{before + 2} streams on the live page")

    qid = ask(ann, "Does the live page move?")
    for i in range(5):
        carol.api.post(f"/api/questions/{qid}/answers", json={"body": f"It does, {i}"})
    wait_until(lambda: figure(page, "latency-p50").endswith(("ms", "s")), timeout=10, what="a post -> event p50")
    wait_until(lambda: figure(page, "events-per-second") not in ("–", "0.0"), timeout=10, what="events per second")
    assert figure(page, "latency-p99").endswith(("ms", "s")) and figure(page, "stream-p50").endswith(("ms", "s"))
    assert figure(page, "backlog") == "0" and figure(page, "failed") == "0" and figure(page, "dead-letters") == "0"
    assert page.locator("#live-processes .live-bar").count() == 1
    assert page.evaluate("performance.timeOrigin") == loaded, "updated in place, never reloaded"
    DOCS.mkdir(exist_ok=True)
    page.set_viewport_size({"width": 1100, "height": 760})
    page.screenshot(path=str(DOCS / "admin-live.png"), full_page=True)

    for other in others:
        other.close()
    wait_until(lambda: streams() == before, timeout=10, what="closed tabs leaving the count")
    assert tabs
    context.close()

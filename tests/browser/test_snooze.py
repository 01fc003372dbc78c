"""Snooze in the page (real Chromium, web process, worker, Redis): while snoozed an answer
counts on the badge but shows no toast; after "Stop snoozing" the next one toasts. A snooze
set elsewhere (another device, through the API) reaches an open tab live."""

from __future__ import annotations

import pytest

from .conftest import PASSWORD, answer, ask, open_tab, wait_for_badge, wait_until

pytestmark = pytest.mark.browser

# Every toast the page ever adds, even one that is gone again by the time we look.
TOAST_LOG = """
window.__toastsShown = [];
document.addEventListener("DOMContentLoaded", () => {
  const box = document.getElementById("toasts");
  if (!box) return;
  new MutationObserver((records) => records.forEach((r) => r.addedNodes.forEach((n) => {
    if (n.classList && n.classList.contains("toast")) window.__toastsShown.push(n.textContent);
  }))).observe(box, { childList: true });
});
"""


def context_in_zone(browser, member, zone: str):
    """A browser logged in as ``member`` whose clock is in ``zone``, recording its toasts."""
    context = browser.new_context(base_url=member.stack.url, timezone_id=zone)
    token = context.request.get("/api/csrf").json()["csrf_token"]
    resp = context.request.post(
        "/api/login", data={"username": member.username, "password": PASSWORD}, headers={"X-CSRFToken": token}
    )
    assert resp.status == 200, resp.text()
    context.add_init_script(TOAST_LOG)
    return context


def toasts_shown(page) -> list[str]:
    return page.evaluate("window.__toastsShown")


def test_snooze_one_hour_counts_on_the_badge_without_a_toast_then_unsnooze_toasts(browser, stack, member):
    ann, bob = member("ann"), member("bob")
    first, second = ask(ann, "Snoozed: does this toast?"), ask(ann, "Awake: does this toast?")
    context = context_in_zone(browser, ann, "Asia/Tokyo")
    page = open_tab(context, "/preferences")
    # The browser's zone is saved the first time (the user had none).
    wait_until(lambda: ann.api.get("/api/preferences/quiet").json()["time_zone"] == "Asia/Tokyo", what="zone saved")
    assert page.input_value("#quiet-time-zone") == "Asia/Tokyo"

    page.get_by_role("button", name="Snooze 1 h").click()
    page.wait_for_selector("#quiet-hours .quiet-status:has-text('Snoozed until')", timeout=5_000)
    assert page.get_by_role("button", name="Stop snoozing").is_visible()
    answer(bob, first, "Answered while ann is snoozed")
    wait_for_badge(page, 1, timeout=10_000)  # the inbox and badge still fill
    # The toast, had there been one, is added in the same step that counted the badge.
    assert toasts_shown(page) == []
    assert page.locator(".toast").count() == 0
    items = ann.api.get("/api/notifications").json()["items"]
    assert [i["payload"]["question_id"] for i in items] == [first]

    page.get_by_role("button", name="Stop snoozing").click()
    page.wait_for_selector("#quiet-hours .quiet-status:has-text('Notifications are on')", timeout=5_000)
    answer(bob, second, "Answered after the snooze")
    toast = page.wait_for_selector('.toast:has-text("Awake: does this toast?")', timeout=10_000)
    assert "bob" in toast.inner_text()
    wait_for_badge(page, 2, timeout=10_000)
    assert not any("Snoozed: does this toast?" in t for t in toasts_shown(page))
    context.close()


def test_a_snooze_from_another_device_reaches_an_open_tab_live(browser, stack, member):
    ann, bob = member("ann"), member("bob")
    qid = ask(ann, "Snoozed from my phone")
    context = context_in_zone(browser, ann, "Europe/Paris")
    page = open_tab(context)
    wait_until(lambda: page.evaluate("!!window.qaNotifyQuiet"), what="quiet.js")

    resp = ann.api.post("/api/preferences/snooze", json={"until": "tomorrow"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["quiet"] is True
    wait_until(lambda: page.evaluate("window.qaNotifyQuiet.isQuiet()"), timeout=10, what="the live quiet event")
    answer(bob, qid, "While the phone snoozed")
    wait_for_badge(page, 1, timeout=10_000)
    assert toasts_shown(page) == []

    assert ann.api.delete("/api/preferences/snooze").json()["quiet"] is False
    wait_until(lambda: not page.evaluate("window.qaNotifyQuiet.isQuiet()"), timeout=10, what="the end of the snooze")
    answer(bob, qid, "After the snooze")
    page.wait_for_selector(".toast", timeout=10_000)
    context.close()


def test_the_quiet_hours_card_says_what_is_wrong_and_saves_a_window(browser, stack, member):
    ann = member("ann")
    context = context_in_zone(browser, ann, "America/Sao_Paulo")
    page = open_tab(context, "/preferences")
    page.wait_for_selector("#quiet-hours .quiet-status:has-text('Notifications are on')", timeout=5_000)

    page.fill("#quiet-start", "22:00")
    page.fill("#quiet-end", "22:00")
    page.get_by_role("button", name="Save quiet hours").click()
    error = page.wait_for_selector("#quiet-hours .quiet-error:has-text('another time')", timeout=5_000)
    assert error.is_visible()
    assert ann.api.get("/api/preferences/quiet").json()["quiet_start"] is None

    page.fill("#quiet-time-zone", "Not/A_Zone")
    page.fill("#quiet-end", "07:30")
    page.get_by_role("button", name="Save quiet hours").click()
    page.wait_for_selector("#quiet-hours .quiet-error:has-text('IANA')", timeout=5_000)

    page.fill("#quiet-time-zone", "Asia/Kolkata")
    page.get_by_role("button", name="Save quiet hours").click()
    page.wait_for_selector("#quiet-hours .quiet-error", state="hidden", timeout=5_000)
    saved = ann.api.get("/api/preferences/quiet").json()
    assert (saved["time_zone"], saved["quiet_start"], saved["quiet_end"]) == ("Asia/Kolkata", "22:00", "07:30")
    assert "Quiet hours" in page.inner_text("#quiet-hours .quiet-status")
    context.close()

"""Desktop notifications: opted in on the preferences page, shown once per browser by the
leader tab when every tab is in the background, never instead of a toast someone can see."""

from __future__ import annotations

import re

import pytest

from .conftest import answer, ask, open_tab, wait_for_badge, wait_until

pytestmark = pytest.mark.browser

# The page calls the browser's real Notification API; this records what it does with it (every
# construction, every permission prompt). Headless Chromium reports every tab as visible
# whatever is in front (no background tabs, no minimized windows), so the test says which tabs
# are in the background: document.visibilityState answers as told and the page gets the same
# visibilitychange event a browser fires when its tab goes behind another.
OBSERVE_PAGE = """
(() => {
  const Real = window.Notification;
  window.__notices = [];
  window.__prompts = 0;
  class Observed extends Real {
    constructor(title, options) {
      super(title, options);
      window.__notices.push({ title, body: options && options.body, tag: options && options.tag });
      window.__lastNotice = this;
    }
  }
  Observed.requestPermission = function () {
    window.__prompts += 1;
    return Real.requestPermission.apply(Real, arguments);
  };
  window.Notification = Observed;

  let visibility = "visible";
  Object.defineProperty(Document.prototype, "visibilityState", { configurable: true, get: () => visibility });
  Object.defineProperty(Document.prototype, "hidden", { configurable: true, get: () => visibility === "hidden" });
  window.__setVisibility = (state) => {
    visibility = state;
    document.dispatchEvent(new Event("visibilitychange"));
  };
})();
"""


def desktop_browser(browser, stack, ann):
    """A browser of ``ann`` that allows notifications from the site and records their use."""
    context = ann.browser_context(browser)
    context.grant_permissions(["notifications"], origin=stack.url)
    context.add_init_script(OBSERVE_PAGE)
    return context


def notices(tab) -> list[dict]:
    return tab.evaluate("window.__notices")


def set_hidden(tab, hidden: bool = True) -> None:
    tab.evaluate("state => window.__setVisibility(state)", "hidden" if hidden else "visible")


def turn_on_desktop_notifications(context):
    prefs = open_tab(context, "/preferences")
    prefs.wait_for_selector('#desktop-notifications[data-state="off"]')
    assert prefs.evaluate("window.__prompts") == 0  # no permission prompt on page load
    prefs.get_by_role("button", name="Turn on desktop notifications").click()
    prefs.wait_for_selector('#desktop-notifications[data-state="on"]')
    assert prefs.evaluate("window.__prompts") == 1
    return prefs


def test_every_tab_hidden_gives_one_desktop_notification_and_a_visible_tab_a_toast(browser, stack, member):
    ann, bob = member("ann"), member("bob")
    context = desktop_browser(browser, stack, ann)
    leader = turn_on_desktop_notifications(context)  # the first tab holds the stream
    other = open_tab(context)
    tabs = [leader, other]
    for tab in tabs:
        set_hidden(tab)

    qid = ask(ann, "Anyone out there?")
    answer(bob, qid, "Yes: on your desktop.")
    for tab in tabs:
        wait_for_badge(tab, 1)
    wait_until(lambda: len(notices(leader)) == 1, what="the desktop notification")
    assert notices(other) == []  # once per browser: the leader shows it
    shown = notices(leader)[0]
    assert shown["title"] == f"{bob.username} answered \u201cAnyone out there?\u201d"
    assert shown["body"] == "Yes: on your desktop."
    assert shown["tag"] == f"qa-notify:new_answers new_answers:question:{qid}"
    assert sum(tab.locator(".toast").count() for tab in tabs) == 0

    # A tab in front: a toast as usual, no OS notification.
    set_hidden(other, False)
    seen = ask(ann, "Looking now?")
    answer(bob, seen, "A toast this time.")
    toast = other.wait_for_selector('.toast[data-type="new_answers"]', timeout=3_000)
    assert "Looking now?" in toast.inner_text()
    assert len(notices(leader)) == 1 and notices(other) == []

    # Clicking the notification brings its tab forward on the question.
    leader.evaluate("setTimeout(() => window.__lastNotice.dispatchEvent(new Event('click')), 0)")
    leader.wait_for_url(re.compile(rf"/questions/{qid}#answer-\d+$"), timeout=5_000)
    context.close()


def test_no_desktop_notification_until_turned_on_or_after_turning_off(browser, stack, member):
    ann, bob = member("ann"), member("bob")
    context = desktop_browser(browser, stack, ann)
    page = open_tab(context)
    set_hidden(page)
    qid = ask(ann, "Not opted in?")
    answer(bob, qid, "Permission alone is not a yes.")
    page.wait_for_selector('.toast[data-type="new_answers"]', timeout=3_000)
    assert notices(page) == []
    assert page.evaluate("window.__prompts") == 0

    prefs = turn_on_desktop_notifications(context)
    prefs.get_by_role("button", name="Turn off desktop notifications").click()
    prefs.wait_for_selector('#desktop-notifications[data-state="off"]')
    for tab in (page, prefs):
        set_hidden(tab)
    answer(bob, ask(ann, "Turned off?"), "Back to toasts.")
    wait_until(lambda: sum(tab.locator('.toast:has-text("Turned off?")').count() for tab in (page, prefs)) == 1)
    assert notices(page) == [] and notices(prefs) == []
    context.close()

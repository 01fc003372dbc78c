"""A Chinese reader's site: pages, toasts and the inbox in Chinese, worded as the server words them."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import PASSWORD, answer, ask, open_tab, wait_for_badge, wait_for_streams

pytestmark = pytest.mark.browser
DOCS = Path(__file__).resolve().parents[2] / "docs"


def chinese_browser(browser, member):
    """A browser whose language is Chinese (``Accept-Language: zh-CN``), logged in as ``member``."""
    context = browser.new_context(base_url=member.stack.url, locale="zh-CN")
    token = context.request.get("/api/csrf").json()["csrf_token"]
    resp = context.request.post(
        "/api/login", data={"username": member.username, "password": PASSWORD}, headers={"X-CSRFToken": token}
    )
    assert resp.status == 200, resp.text()
    return context


def test_a_chinese_browser_reads_the_site_and_its_toasts_in_chinese(browser, stack, member):
    ann, bob, carl = member("ann"), member("bob"), member("carl")
    context = chinese_browser(browser, ann)
    page = open_tab(context)
    assert page.locator("html").get_attribute("lang") == "zh-CN"
    assert page.locator("#live-status").inner_text() == "实时"
    assert page.get_by_role("link", name="收件箱").count() == 1
    wait_for_streams(stack, 1)
    qid = ask(ann, "服务器推送事件怎么重连？")
    answer(bob, qid, "浏览器会按 retry 提示等待。")
    toast = page.wait_for_selector('.toast[data-type="new_answers"]', timeout=10_000)
    assert f"{bob.username}回答了“服务器推送事件怎么重连？”" in toast.inner_text()
    answer(carl, qid, "还会带上 Last-Event-ID。")
    page.wait_for_selector('.toast[data-type="new_answers"][data-count="2"]', timeout=10_000)
    grouped = page.locator('.toast[data-type="new_answers"]').last.inner_text()
    assert f"{carl.username} 和 {bob.username}回答了" in grouped and "2 个新回答" in grouped
    wait_for_badge(page, 1)
    DOCS.mkdir(exist_ok=True)
    page.screenshot(path=str(DOCS / "toast-zh.png"))

    inbox = open_tab(context, "/inbox")
    item = inbox.locator("li.notification").first
    assert f"{carl.username} 和 {bob.username}回答了“服务器推送事件怎么重连？”" in item.inner_text()
    inbox.screenshot(path=str(DOCS / "inbox-zh.png"), full_page=True)
    context.close()

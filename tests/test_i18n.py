"""Chinese and English: every string people read is translated, and each reader gets their language.

The catalog check extracts the marked strings from the code and templates the way `make
messages` does, so a new string without its Chinese fails here, not in front of a reader.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from babel.messages.pofile import read_po
from flask_babel import force_locale

from qa_notify.notifications.wording import describe, page_words

from .test_email import ADDRESS, answer_as, app_config, ask, asker_with_email, mail_settings, scan  # noqa: F401

REPO = Path(__file__).resolve().parent.parent
CATALOG = REPO / "qa_notify" / "translations" / "zh_Hans_CN" / "LC_MESSAGES" / "messages.po"


def extracted(tmp_path) -> list:
    """Every marked string of the code and templates, as `make messages` extracts them."""
    pot = tmp_path / "messages.pot"
    pybabel = Path(sys.executable).with_name("pybabel")
    keywords = ["-k", "_l", "-k", "lazy_gettext", "-k", "lazy_ngettext:1,2"]
    subprocess.run(
        [str(pybabel), "--quiet", "extract", "-F", "babel.cfg", *keywords, "-o", str(pot), "."],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    with pot.open("rb") as f:
        return [m for m in read_po(f) if m.id]


def test_every_string_people_read_has_its_chinese(tmp_path):
    with CATALOG.open("rb") as f:
        catalog = read_po(f, locale="zh_CN")
    missing, fuzzy = [], []
    for message in extracted(tmp_path):
        found = catalog.get(message.id)
        strings = found.string if found is not None and isinstance(found.string, tuple) else (found and found.string,)
        if found is None or not all(strings):
            missing.append(message.id)
        elif found.fuzzy:
            fuzzy.append(message.id)
    assert not missing, f"untranslated (run `make messages`, then translate): {missing}"
    assert not fuzzy, f"fuzzy, check and unmark: {fuzzy}"
    problems = [(message.id, errors) for message, errors in catalog.check()]
    assert not problems, f"translations whose placeholders do not match: {problems}"


@pytest.mark.parametrize(
    ("locale", "count", "actors", "headline", "detail"),
    [
        ("en", 1, ["bob"], "bob answered “Q”", "the excerpt"),
        ("en", 2, ["bob", "amy"], "bob and amy answered “Q”", "2 new answers"),
        ("en", 5, ["bob", "amy"], "bob and 4 others answered “Q”", "5 new answers"),
        ("en", 2, ["bob"], "bob and 1 other answered “Q”", "2 new answers"),
        ("zh_CN", 1, ["bob"], "bob回答了“Q”", "the excerpt"),
        ("zh_CN", 5, ["bob", "amy"], "bob 和另外 4 人回答了“Q”", "5 个新回答"),
    ],
)
def test_plurals_read_right_in_both_languages(app, locale, count, actors, headline, detail):
    payload = {"question_title": "Q", "excerpt": "the excerpt", "url": "/questions/1"}
    with app.test_request_context(), force_locale(locale):
        said = describe("new_answers", payload, count, actors, actor_count=count)
    assert (said.headline, said.detail) == (headline, detail)


def test_the_page_gets_the_same_words_unfilled(app):
    with app.test_request_context(), force_locale("zh_CN"):
        words = page_words()
    assert words["answered"] == "%(people)s回答了“%(title)s”"
    assert words["answers"] == {"one": "%(num)d 个新回答", "other": "%(num)d 个新回答"}
    with app.test_request_context(), force_locale("en"):
        assert page_words()["answers"] == {"one": "%(num)d new answer", "other": "%(num)d new answers"}


def test_the_browser_language_is_used_until_the_user_chooses(login_as, api):
    assert 'lang="zh-CN"' in api.get("/login", headers={"Accept-Language": "zh-TW,zh;q=0.9"}).get_data(as_text=True)
    assert 'lang="en"' in api.get("/login", headers={"Accept-Language": "fr-FR,fr;q=0.9"}).get_data(as_text=True)
    ann = login_as("ann")
    page = ann.get("/", headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
    assert 'lang="zh-CN"' in page and "离线" in page
    saved = ann.put("/api/preferences", {"locale": "en"})
    assert saved.status_code == 200 and saved.get_json()["locale"] == "en"
    page = ann.get("/", headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
    assert 'lang="en"' in page and "offline" in page
    resp = ann.put("/api/preferences", {"locale": "klingon"})
    assert resp.status_code == 422 and "en, zh_CN" in resp.get_json()["error"]


def test_the_language_card_saves_a_choice_and_can_follow_the_browser_again(login_as):
    ann = login_as("ann")
    page = ann.get("/preferences", headers={"Accept-Language": "en"}).get_data(as_text=True)
    token = page.split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
    resp = ann.client.post("/preferences/language", data={"csrf_token": token, "locale": "zh_CN"})
    assert resp.status_code == 302
    page = ann.get("/preferences", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "已保存。" in page and "通知偏好设置" in page and "<strong>站内</strong>" in page
    assert ann.client.post("/preferences/language", data={"csrf_token": token, "locale": "fr"}).status_code == 422
    ann.client.post("/preferences/language", data={"csrf_token": token, "locale": ""})
    assert ann.get("/api/preferences").get_json()["locale"] is None
    assert "Notification preferences" in ann.get("/preferences", headers={"Accept-Language": "en"}).get_data(
        as_text=True
    )


def test_an_email_is_written_in_its_readers_language(app, smtp, login_as):
    asker = asker_with_email(login_as, smtp)
    assert asker.put("/api/preferences", {"locale": "zh_CN"}).status_code == 200
    qid = ask(asker, "为什么用 SSE？")
    answer_as(login_as, ["bob", "carl", "dora"], qid)
    scan(app)
    [message] = smtp.to(ADDRESS)
    text = message.get_body(("plain",)).get_content()
    assert message["Subject"].strip() == "dora 和另外 2 人回答了“为什么用 SSE？”"  # (decoding leaves a space)
    assert "你离开期间，有 3 条通知在等你。" in text and "3 个新回答" in text
    assert "退订（无需登录）" in text

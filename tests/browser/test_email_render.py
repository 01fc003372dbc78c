"""An away email as a mail client shows it: its HTML part rendered in Chromium (docs/email.png)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..smtp import confirm_address, html_of

pytestmark = pytest.mark.browser
DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture
def app_config(app_config, smtp) -> dict:
    app_config.update(
        MAIL_SERVER="127.0.0.1",
        MAIL_PORT=str(smtp.port),
        MAIL_USE_TLS=False,
        EMAIL_AWAY_SECONDS=0,
        SITE_URL="https://qa.example.org",
    )
    return app_config


def test_an_away_email_renders_grouped_with_its_links(browser, app, smtp, login_as):
    ann = login_as("ann")
    assert ann.put("/api/preferences", {"email": "ann@example.org"}).status_code == 200
    confirm_address(app.test_client(), smtp, "ann@example.org")
    sse = ann.post("/api/questions", {"title": "How do SSE retries work?"}).get_json()["id"]
    valkey = ann.post("/api/questions", {"title": "Why one hash tag per user?"}).get_json()["id"]
    for name in ("bob", "carol", "dave", "erin", "frank"):
        login_as(name).post(f"/api/questions/{sse}/answers", {"body": "The browser waits for the retry hint."})
    login_as("gus").post(f"/api/questions/{valkey}/answers", {"body": "So a user's keys share one slot."})
    admin = login_as("alice", role="admin")
    admin.post("/api/admin/broadcast", {"message": "Maintenance on Sunday at 02:00 UTC, about 10 minutes."})
    with app.app_context():
        app.extensions["celery"].tasks["workers.scan_email"].apply()
    [message] = smtp.to("ann@example.org")

    page = browser.new_page(viewport={"width": 720, "height": 600})
    page.set_content(html_of(message))
    grouped = page.get_by_role("link", name="frank and 4 others answered \u201cHow do SSE retries work?\u201d")
    assert grouped.is_visible()
    assert grouped.get_attribute("href").startswith(f"https://qa.example.org/questions/{sse}#answer-")
    assert page.get_by_text("7 notifications were waiting for you").is_visible()
    assert page.get_by_role("link", name="Open your inbox").get_attribute("href") == "https://qa.example.org/inbox"
    assert (
        page.get_by_role("link", name="unsubscribe")
        .get_attribute("href")
        .startswith("https://qa.example.org/email/unsubscribe/")
    )
    DOCS.mkdir(exist_ok=True)
    page.screenshot(path=str(DOCS / "email.png"), full_page=True)
    page.close()

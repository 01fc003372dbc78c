"""The mail backend for a laptop: each message is written as an ``.eml`` file, not sent.

Used when ``MAIL_SERVER`` is not set (``make run``). Open a file with any mail client to
see the email as a user would. Flask-Mailman loads it by name (``MAIL_BACKEND``).
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime
from pathlib import Path

from flask import current_app
from flask_mailman.backends.base import BaseEmailBackend

log = logging.getLogger(__name__)


class EmailBackend(BaseEmailBackend):
    """Write every message to ``MAIL_FILE_DIR/<time>-<random>.eml`` and log its path."""

    def send_messages(self, email_messages) -> int:
        """Write the messages; return how many were written."""
        directory = Path(current_app.config["MAIL_FILE_DIR"])
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)  # addresses are personal data
        for message in email_messages:
            stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
            path = directory / f"{stamp}-{secrets.token_hex(4)}.eml"
            path.write_bytes(message.message().as_bytes(linesep="\r\n"))
            path.chmod(0o600)
            # A warning, not info: in production this means no email reaches anyone.
            log.warning("no MAIL_SERVER: email to %s written to %s", ", ".join(message.to), path)
        return len(email_messages)

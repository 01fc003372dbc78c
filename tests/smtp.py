"""A real SMTP server in the test process (aiosmtpd): it keeps what it receives, and can be
told to refuse a recipient or to hold its reply to a message's data until released."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from email import message_from_bytes, policy
from email.message import EmailMessage

from aiosmtpd.controller import Controller

from .live import free_port


class SMTPSink:
    """An SMTP server on 127.0.0.1 that records every message it accepts."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.messages: list[EmailMessage] = []
        self.refuse: set[str] = set()  # recipients answered "451 try again later"
        self.hold: threading.Event | None = None  # the reply to DATA waits until this is set
        self.holding = threading.Event()  # set while a message's DATA is being held
        self.hang_up = False  # keep the message, then close the connection without a reply
        self.data_started = 0
        self._controller: Controller | None = None

    # -- aiosmtpd handler hooks -------------------------------------------------------------

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return "451 4.3.0 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.data_started += 1
        # Kept before any reply, as a mail server that queued it would: a client cut off
        # while it waits for the reply (``hold``) never learns that it was delivered.
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        if self.hang_up:
            server.transport.close()
            return "421 closing"  # never reaches the client
        if self.hold is not None:
            self.holding.set()
            await asyncio.get_running_loop().run_in_executor(None, self.hold.wait)
        return "250 Message accepted for delivery"

    # -- running ----------------------------------------------------------------------------

    def start(self) -> SMTPSink:
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            if self.hold is not None:
                self.hold.set()
            self._controller.stop()
            self._controller = None

    def to(self, address: str) -> list[EmailMessage]:
        """The messages addressed to ``address``, oldest first."""
        return [m for m in self.messages if address in m["To"]]

    def wait_for(self, count: int, timeout: float = 20) -> list[EmailMessage]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.messages


def text_of(message: EmailMessage) -> str:
    """The plain-text part."""
    return message.get_body(("plain",)).get_content()


def html_of(message: EmailMessage) -> str:
    """The HTML part."""
    return message.get_body(("html",)).get_content()


def confirm_address(client, sink: SMTPSink, address: str) -> None:
    """Do what the owner of ``address`` does: open the confirmation email's link, press Confirm.

    Then forget the confirmation email, so a test sees only the notification emails.
    """
    [message] = [m for m in sink.to(address) if m["Subject"].startswith("Confirm your email address")][-1:]
    link = re.search(r"https?://\S+/email/confirm/\S+", text_of(message)).group(0)
    path = "/" + link.split("/", 3)[3]
    resp = client.post(path)  # a Flask test client: the link needs no session
    assert resp.status_code == 200, resp.get_data(as_text=True)
    sink.messages.remove(message)

"""Write a live event straight to an idle stream's socket, without waking the stream.

A stream spends its life parked in ``Subscription.wait``. Waking its greenlet to send one
event (an event set, a switch in and out, a timer stopped and started again, a trip up
and down the WSGI server's write path) cost more CPU than the send itself: a broadcast to
the 13,000 streams of one process spent most of its time there. So while a stream is
parked with nothing queued, the one handing out an event (``Registry.deliver`` and
``deliver_broadcast``, in the subscriber's greenlet) frames it and hands the bytes to the
kernel itself, with a non-blocking send, moving the stream's position as the stream would.

Only what fits in the socket's buffer goes this way. Whatever the kernel does not take
(a slow client) is queued as ``Unsent`` for the stream's greenlet, woken as before, which
writes the rest with a blocking send before anything else; until then later events queue
behind it, so the order on the wire is the order of arrival. Markers (a channel that was
cut off and must be re-read) are always queued: only the stream's greenlet reads Redis.
"""

from __future__ import annotations

import random
import socket
from typing import TYPE_CHECKING

from ..metrics.instruments import STREAM_SENT
from .replay import Position, StreamEvent
from .sse import format_comment

if TYPE_CHECKING:
    from collections.abc import Callable

    from .registry import Subscription


HEARTBEAT = format_comment("heartbeat")


class Unsent(bytes):
    """The rest of a frame the kernel did not take at once: the stream's greenlet sends it as is."""


class DirectWriter:
    """What a parked stream lends the one handing out events: its socket, position and framing."""

    __slots__ = ("raw", "wire", "position", "frame", "slot")

    def __init__(self, sock, wire: Callable[[bytes], bytes], position: Position, frame) -> None:
        self.raw = getattr(sock, "_sock", sock)  # the real socket: a send never switches greenlets
        self.wire = wire  # the bytes the server would put on the wire (a chunk, if chunked)
        self.position = position  # the stream's own: what it sends next starts from here
        self.frame = frame  # the stream's framing of one event (named or catch-all)
        self.slot = random.getrandbits(16)  # which of the heartbeat ticker's ticks beats for it

    def send(self, sub: Subscription, event: StreamEvent) -> None:
        """Send ``event`` on ``sub``'s socket now; queue what the kernel does not take."""
        key = self.position.take(event)
        if key is None:
            return  # sent already (a replay covered it)
        if self._put(sub, self.wire(self.frame(event, str(self.position))), whole=True):
            STREAM_SENT.observe_since_ms(key[0])

    def beat(self, sub: Subscription) -> None:
        """Send a heartbeat comment on ``sub``'s socket now, if the kernel takes any of it.

        A client whose socket buffer is full gets none (it has not read the last one); the
        next tick tries again. Part of one is finished by the stream, like any frame.
        """
        self._put(sub, self.wire(HEARTBEAT), whole=False)

    def _put(self, sub: Subscription, data: bytes, whole: bool) -> bool:
        """Hand ``data`` to the kernel; queue the rest (all of it if ``whole``). False if the client is gone."""
        try:
            sent = self.raw.send(data, socket.MSG_DONTWAIT)
        except BlockingIOError:
            sent = 0
        except OSError:
            sub.close("client_gone")
            return False
        if sent < len(data) and (sent or whole):
            sub.queue(Unsent(data[sent:]))
        return True

"""One heartbeat ticker per process for the streams written to directly (``wire.DirectWriter``).

An idle stream sends a comment every ``SSE_HEARTBEAT_SECONDS`` so proxies keep the
connection and a dead client is noticed. Each stream waking on its own timer to send it
(a timer, a greenlet switch in and out, the WSGI server's write path) cost ~80 µs of CPU
a beat: at 90,000 streams and 15 s, 6,000 wake-ups a second, most of a core. Here one
greenlet ticks about once a second and writes the comment itself, with a non-blocking
send, to the parked streams whose slot the tick is (``DirectWriter.slot``), so each
stream gets one beat per period and the beats are spread over it. A stream that is busy,
or has something queued, is skipped that period: it is writing anyway.

Streams not served by our server (no ``DirectWriter``) keep their own timer.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .registry import Registry
    from .wire import DirectWriter

log = logging.getLogger(__name__)


class Heartbeats:
    """Beat for ``registry``'s parked streams, each once every ``every`` seconds."""

    def __init__(self, registry: Registry, every: float) -> None:
        self.registry = registry
        self.every = every
        self.slices = max(1, int(every))  # ticks per period: about one a second
        self._ticker = None

    def start(self, writer: DirectWriter) -> DirectWriter:
        """Return ``writer``, ticking for it: a stream calls this as it starts to be written to directly."""
        if self._ticker is None:
            import gevent

            self._ticker = gevent.spawn(self._run)
        return writer

    def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.kill(block=False)
            self._ticker = None

    def _run(self) -> None:
        import gevent

        tick, k = self.every / self.slices, 0
        while True:
            gevent.sleep(tick)
            k = (k + 1) % self.slices
            try:
                self.beat(k)
            except Exception:  # one bad tick must not end the heartbeats of the process
                log.exception("heartbeat tick failed")

    def beat(self, k: int) -> int:
        """Send a heartbeat to each parked stream of slot ``k``; return how many were sent."""
        sent = 0
        for sub in self.registry.subscriptions():
            writer = sub.writer
            if writer is not None and writer.slot % self.slices == k and sub.idle():
                writer.beat(sub)
                sent += 1
        return sent

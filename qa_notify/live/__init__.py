"""The live side of the wire: from Redis to an open stream (SSE or long-poll), in this web process.

- ``broker``: the interface to pub/sub and history; ``subscriber`` + ``shard`` (Redis,
  one server or a cluster) and ``memory`` (in-process) implement it;
- ``registry``: this process's streams per user, control messages, broadcasts handed to the
  streams they are for, cutting off stuck writers;
- ``feed``: the broadcast channel every process carries, and the newest broadcast id seen;
- ``leases``: the per-user stream quota across processes, and presence;
- ``hub``: the process's registry wired to its broker and leases;
- ``replay``: reading the user's and the broadcast Redis streams since a stream's position;
- ``attach``: attach + replay, shared by ``stream`` (SSE) and ``longpoll``;
- ``sse``: the wire format; ``admission``: refusing streams while the process drains.

The live routes (``GET /notifications``, ``GET /api/notifications/poll``) have a
blueprint of their own, ``live``, with the same URLs as before. This package may import
``qa_notify.events`` (types, channel names, connections) and the inbox's muted types
(``notifications``); neither imports it.
"""

from flask import Blueprint

bp = Blueprint("live", __name__)

from . import longpoll, stream  # noqa: E402, F401  (routes register themselves on bp)

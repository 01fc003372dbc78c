"""The comparison: the same streams served the flask-sse 1.0 way.

One channel per user (``/stream?channel=user.<id>``), served by ``gunicorn -k gevent`` as
flask-sse's documentation recommends. ``POST /publish`` is the cheapest publish path a
flask-sse site has: no database, no worker, one Redis PUBLISH. flask-sse has no login,
no replay and no heartbeat, so those are not measured for it.
"""

from __future__ import annotations

import os

from flask import Flask, jsonify, request
from flask_sse import sse

app = Flask(__name__)
app.config["REDIS_URL"] = os.environ["REDIS_URL"]
app.register_blueprint(sse, url_prefix="/stream")


@app.post("/publish")
def publish():
    """Publish ``data`` as an event of ``type`` to ``channel``."""
    body = request.get_json()
    sse.publish(body["data"], type=body["type"], channel=body["channel"])
    return jsonify(ok=True)


@app.get("/healthz")
def healthz():
    return jsonify(ok=True)

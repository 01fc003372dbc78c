"""gunicorn settings for qa_notify's web processes: ``gunicorn 'qa_notify:create_app()'``.

gevent workers hold thousands of open streams each; gunicorn's default of 1,000
connections per worker would cap them, hence ``worker_connections``.
"""

import os
import signal

bind = os.environ.get("BIND", "127.0.0.1:8000")
worker_class = "gevent"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_connections = int(os.environ.get("WORKER_CONNECTIONS", "10000"))
graceful_timeout = 10
# gunicorn's gevent worker reads every request, the first one included, under this timeout:
# it is the deadline for request headers (slowloris) as well as the keep-alive idle limit.
# Keep nginx's upstream keepalive_timeout below it (deploy/nginx.conf uses 5 s).
keepalive = int(float(os.environ.get("WEB_HEADER_TIMEOUT_SECONDS", "10")))


def on_starting(server):
    """Each stream is a socket: lift the soft open-file limit (often 1,024) to the hard one."""
    from qa_notify.limits import raise_open_file_limit

    raise_open_file_limit()


def post_worker_init(worker):
    """On SIGTERM, end this worker's streams at once so browsers reconnect to another one."""
    from qa_notify.notifications.stream import close_all_streams

    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):
        close_all_streams(worker.wsgi)
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_term)

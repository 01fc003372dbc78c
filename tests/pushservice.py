"""A push service of our own (RFC 8030) for the tests, and browsers that subscribe to it.

``PushService`` is a small HTTPS server on 127.0.0.1 with a self-signed certificate for
``localhost`` (made with ``cryptography``; the site trusts it through PUSH_CA_BUNDLE). For
each POST it checks the VAPID ``Authorization`` (RFC 8292: an ES256 JWT for this origin,
not expired, signed by the key it names, which must be the site's public key), then
decrypts the aes128gcm body (RFC 8188) with the subscribing browser's private key, the way
a browser would, and records what arrived. A test can make it answer a status (410, 429
with Retry-After, 500, a redirect) for a device, or stop and start it on the same port.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import http_ece
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from py_vapid import Vapid02

from devstack.embedded_redis import free_port

MAX_BODY = 4096


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Browser:
    """One browser's push subscription: its endpoint, and the keys only it holds."""

    endpoint: str
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes

    def to_json(self) -> dict:
        """What ``PushSubscription.toJSON()`` gives the page to post."""
        point = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": self.endpoint,
            "expirationTime": None,
            "keys": {"p256dh": b64url(point), "auth": b64url(self.auth)},
        }

    @property
    def token(self) -> str:
        return self.endpoint.rsplit("/", 1)[1]


@dataclass
class Received:
    """One push the service accepted: for which device, its decrypted JSON, its headers."""

    token: str
    message: dict
    headers: dict
    size: int


@dataclass
class PushService:
    """The local push service; ``vapid_public_key`` is the site's (base64url), set by the test."""

    directory: Path
    vapid_public_key: str = ""
    port: int = field(default_factory=free_port)
    received: list[Received] = field(default_factory=list)
    # token -> list of (status, headers) to answer, one per POST, before accepting again.
    scripted: dict[str, list[tuple[int, dict]]] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)  # every path POSTed to, accepted or not
    rejected: list[str] = field(default_factory=list)
    browsers: dict[str, Browser] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.cert_file = self.directory / "push-cert.pem"
        self.key_file = self.directory / "push-key.pem"
        _self_signed(self.cert_file, self.key_file)
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    @property
    def origin(self) -> str:
        return f"https://localhost:{self.port}"

    def site_key(self) -> str:
        """Make the site a VAPID key pair; this service checks pushes against its public half.
        Return the private key (PEM) for the site's ``VAPID_PRIVATE_KEY``."""
        from qa_notify.push.vapid import generate_pem

        pem = generate_pem()
        public = Vapid02.from_pem(pem).public_key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        self.vapid_public_key = b64url(public)
        return pem.decode()

    def browser(self) -> Browser:
        """A new browser subscribed to this service."""
        token = b64url(os.urandom(12))
        browser = Browser(f"{self.origin}/push/{token}", ec.generate_private_key(ec.SECP256R1()), os.urandom(16))
        self.browsers[token] = browser
        return browser

    def start(self) -> PushService:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                service._handle(self)

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Go away: connections are refused until ``start`` again (same port)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def messages_for(self, browser: Browser) -> list[dict]:
        with self._lock:
            return [r.message for r in self.received if r.token == browser.token]

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        """Wait until ``count`` pushes arrived in all; return them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.05)
        raise AssertionError(f"{len(self.received)} pushes arrived, expected {count}: {self.received}")

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length)
        token = request.path.rsplit("/", 1)[-1]
        with self._lock:
            self.hits.append(request.path)
            script = self.scripted.get(token)
            answer = script.pop(0) if script else None
        if answer is not None:
            return self._reply(request, *answer)
        problem = self._check(request, token, body)
        if problem:
            with self._lock:
                self.rejected.append(problem)
            return self._reply(request, 400, {}, problem)
        browser = self.browsers[token]
        plain = http_ece.decrypt(body, private_key=browser.private_key, auth_secret=browser.auth, version="aes128gcm")
        with self._lock:
            self.received.append(
                Received(token, json.loads(plain), {k.lower(): v for k, v in request.headers.items()}, len(body))
            )
        self._reply(request, 201, {"Location": f"/message/{len(self.received)}"})

    def _check(self, request, token: str, body: bytes) -> str | None:
        """Return what is wrong with the push (as a push service would refuse it), or None."""
        if not request.path.startswith("/push/") or token not in self.browsers:
            return "no such subscription"
        if len(body) > MAX_BODY:
            return f"payload too large: {len(body)}"
        if request.headers.get("Content-Encoding") != "aes128gcm":
            return "not aes128gcm"
        if not (request.headers.get("TTL") or "").isdigit():
            return "no TTL"
        auth = request.headers.get("Authorization") or ""
        try:
            scheme, params = auth.split(" ", 1)
            parts = dict(p.strip().split("=", 1) for p in params.split(","))
            claims = json.loads(b64url_decode(parts["t"].split(".")[1]))
        except (ValueError, KeyError):
            return "no VAPID authorization"
        if scheme != "vapid" or parts.get("k") != self.vapid_public_key:
            return "VAPID key is not the site's"
        if not Vapid02.verify(auth):
            return "VAPID signature does not verify"
        if claims.get("aud") != self.origin or int(claims.get("exp", 0)) <= time.time():
            return f"VAPID claims wrong: {claims}"
        if not str(claims.get("sub", "")).startswith("mailto:"):
            return "no VAPID subject"
        return None

    @staticmethod
    def _reply(request, status: int, headers: dict, text: str = "") -> None:
        data = text.encode()
        request.send_response(status)
        for name, value in headers.items():
            request.send_header(name, value)
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)


def _self_signed(cert_file: Path, key_file: Path) -> None:
    """Write a self-signed certificate for localhost / 127.0.0.1 and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )

"""The site's VAPID key pair (RFC 8292): made once, loaded from the settings, the public half for browsers.

Where the private key lives: ``VAPID_PRIVATE_KEY`` (a PEM, or the raw 32-byte key in
base64url) if set, else the PEM file ``VAPID_KEY_FILE`` (``instance/vapid_private.pem``),
which ``manage.py run`` writes once, readable by its owner only. The public key is always
derived from the private one, so the two can never disagree.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask import current_app
from py_vapid import Vapid02


class NoKeys(Exception):
    """No VAPID private key is configured (nor a key file): push is off."""


def b64url(data: bytes) -> str:
    """Return ``data`` in unpadded base64url, the encoding of every Web Push key."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode unpadded (or padded) base64url; raise ValueError on anything else."""
    if not isinstance(text, str) or not text or any(c not in _B64URL for c in text.rstrip("=")):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4))


_B64URL = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def generate_pem() -> bytes:
    """Return a new P-256 private key as PKCS#8 PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def ensure_key_file(path: Path) -> bool:
    """Write a new private key to ``path`` (mode 0600) unless it exists; True if it wrote one."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(generate_pem())
    return True


def load_vapid() -> Vapid02:
    """Return the signer for this app's VAPID key; raise NoKeys when none is configured."""
    cache = current_app.extensions.setdefault("qa_push_vapid", {})
    config = current_app.config
    source = config.get("VAPID_PRIVATE_KEY") or config.get("VAPID_KEY_FILE")
    if source not in cache:
        cache.clear()
        cache[source] = _read_key(config.get("VAPID_PRIVATE_KEY"), config.get("VAPID_KEY_FILE"))
    return cache[source]


def _read_key(inline: str | None, key_file: str | None) -> Vapid02:
    """Build the signer from the inline key, else the key file."""
    if inline:
        text = inline.strip()
        if text.startswith("-----BEGIN"):
            return Vapid02.from_pem(text.encode())
        return Vapid02.from_raw(text.encode())
    if key_file and Path(key_file).is_file():
        return Vapid02.from_pem(Path(key_file).read_bytes())
    raise NoKeys("no VAPID key: set VAPID_PRIVATE_KEY or create VAPID_KEY_FILE (manage.py run does)")


def public_key() -> str:
    """Return the public key browsers subscribe with (``applicationServerKey``), base64url."""
    raw = load_vapid().public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return b64url(raw)

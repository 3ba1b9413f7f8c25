"""Signed session cookies and CSRF tokens for the web pages.

A session is `<user>|<expiry>|<nonce>` and its HMAC-SHA256 under the server's secret
(OPUS_SECRET_KEY, else a random key kept in the data folder, readable by its owner
only), so that no session table is needed and every web process agrees. The CSRF token
of a form is an HMAC of the session under the same key: a page of this server can send
it, another site cannot read it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time

from opus.config import Settings

COOKIE = "opus_session"
VISITOR = "opus_visitor"  # a visitor's CSRF seed, where anonymous access is on
LIFETIME = 12 * 3600  # seconds a sign-in lasts


def secret_key(settings: Settings) -> bytes:
    """OPUS_SECRET_KEY, else the key kept in the data folder, made by the first process
    that needs it: written whole to a file of its own, then linked into place, so that
    the web server's workers starting together all read the one key that won."""
    if settings.secret_key:
        return settings.secret_key.encode()
    path = settings.data_dir / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f"secret_key.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_hex(32).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(draft, path)
        except FileExistsError:
            pass  # another process was first: its key is the one
        finally:
            draft.unlink()
    return path.read_bytes().strip()


class Sessions:
    def __init__(self, settings: Settings) -> None:
        self._key = secret_key(settings)

    def _sign(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    def issue(self, user: str, now: float | None = None) -> str:
        expiry = int((now or time.time()) + LIFETIME)
        text = f"{user}|{expiry}|{secrets.token_hex(8)}"
        encoded = base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")
        return f"{encoded}.{self._sign(text)}"

    def user(self, cookie: str | None, now: float | None = None) -> str | None:
        """The user a valid, unexpired session cookie names; None otherwise."""
        if not cookie or "." not in cookie:
            return None
        encoded, _, signature = cookie.rpartition(".")
        try:
            text = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        if not hmac.compare_digest(self._sign(text), signature):
            return None
        user, _, rest = text.partition("|")
        expiry = rest.partition("|")[0]
        if not expiry.isdigit() or int(expiry) < (now or time.time()):
            return None
        return user

    def csrf(self, cookie: str) -> str:
        return self._sign(f"csrf|{cookie}")[:32]

    def csrf_ok(self, cookie: str | None, token: str | None) -> bool:
        return bool(cookie and token) and hmac.compare_digest(self.csrf(cookie or ""), token or "")

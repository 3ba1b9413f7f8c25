"""URL inputs fetched without reaching this host's own services or its private networks.

A job input given as a URL is downloaded by the server: without care, a user could have
it read `http://127.0.0.1:<port>/...`, the cloud metadata service or an intranet host and
get the answer back as a result (server-side request forgery). So a URL is fetched only
if every address its host resolves to is public (loopback, private, link-local, shared,
multicast, reserved addresses refused, also in their IPv4-mapped, NAT64 and 6to4 forms),
unless its host is one the server's settings allow (`OPUS_FETCH_ALLOW_HOSTS`).

The check is made on the resolved addresses and the connection goes to those very
addresses (a second lookup could answer differently: DNS rebinding); each redirect is
followed here, and checked again in full. Waits are bounded by `fetch_timeout`, the whole
download by a deadline, its size by `fetch_max_bytes`.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urljoin, urlsplit

from opus.config import Settings
from opus.store.files import TooLarge, write_stream

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_REDIRECTS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "OPUS (IVOA UWS job server)"
DEFAULT_PORTS = {"http": 80, "https": 443}

SHARED = ipaddress.IPv4Network("100.64.0.0/10")  # carrier-grade NAT, RFC 6598
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: the last 32 bits are IPv4
LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated ::a.b.c.d
METADATA = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
# The request target keeps every printable ASCII character; spaces and others are quoted.
PRINTABLE = "".join(chr(c) for c in range(0x21, 0x7F))


class FetchError(Exception):
    """A URL input that cannot be fetched; the message is one line for the user."""


class UnsafeURL(FetchError):
    """The URL is refused by policy (scheme, credentials, port, or where it leads)."""


class FetchFailed(FetchError):
    """The URL could not be fetched: name resolution, network or HTTP status."""


@dataclass(frozen=True)
class _Target:
    """A checked URL: where to connect, and what to say in Host, SNI and the request."""

    url: str
    scheme: str
    host: str  # ASCII (IDNA), no brackets
    port: int
    path: str
    addresses: list[str]


def refusal(ip: IPAddress) -> str | None:
    """Why the server does not connect to `ip` (a phrase: "a loopback address"), or None
    for a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner, form = _embedded(ip)
        if inner is not None:
            reason = refusal(inner)
            if reason is not None:
                return f"{form} of {inner}, {reason}"
            if form != "an IPv4-compatible form":
                return None  # these reach the (public) IPv4 address they embed
    if ip.is_unspecified:
        return "an unspecified address (it means this host)"
    if ip.is_loopback:
        return "a loopback address"
    if ip in METADATA:
        return "a cloud metadata address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in SHARED:
        return "a shared (carrier-grade NAT) address"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.teredo is not None:
            return "a Teredo tunnel address"
        if ip in LOCAL_NAT64:
            return "a local-use NAT64 address"
        if ip.is_site_local:
            return "a site-local address"
    if ip.is_reserved:
        return "a reserved address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global:
        return "not a public address"
    return None


def _embedded(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address | None, str]:
    """The IPv4 address an IPv6 address stands for, and the name of the form."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped, "an IPv4-mapped form"
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "a NAT64 form"
    if ip.sixtofour is not None:
        return ip.sixtofour, "a 6to4 form"
    if ip in IPV4_COMPATIBLE and int(ip) > 1:
        return ipaddress.IPv4Address(int(ip)), "an IPv4-compatible form"
    return None, ""


def _normal(host: str) -> str:
    """A host name or address as the allow-list compares it."""
    host = host.strip().lower().removeprefix("[").removesuffix("]").rstrip(".")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _check(url: str, allowed: Collection[str]) -> _Target:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise UnsafeURL(f"{url!r}: a URL may not contain control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeURL(f"{url}: not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        what = f"the scheme {scheme}:" if scheme else "a URL without a scheme"
        raise UnsafeURL(f"{url}: {what} is not fetched, only http and https URLs")
    if parts.username is not None or parts.password is not None:
        raise UnsafeURL(f"{url}: user names and passwords in URLs are not accepted")
    host = parts.hostname or ""
    if not host:
        raise UnsafeURL(f"{url}: the URL has no host")
    if port == 0:
        raise UnsafeURL(f"{url}: port 0 is not a port one can fetch from")
    port = port or DEFAULT_PORTS[scheme]
    try:
        ascii_host = host if host.isascii() else host.encode("idna").decode("ascii")
        infos = socket.getaddrinfo(ascii_host, port, type=socket.SOCK_STREAM)
    except UnicodeError:
        raise UnsafeURL(f"{url}: {host} is not a valid host name") from None
    except OSError:
        raise FetchFailed(f"{url}: cannot resolve host {host}") from None
    addresses: list[str] = []
    for family, _, _, _, sockaddr in infos:
        address = str(sockaddr[0])
        if family in (socket.AF_INET, socket.AF_INET6) and address not in addresses:
            addresses.append(address)
    if not addresses:
        raise FetchFailed(f"{url}: cannot resolve host {host}")
    if _normal(host) not in {_normal(h) for h in allowed}:
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%")[0])
            reason = refusal(ip)
            if reason is not None:
                subject = f"{ip} is" if _literal(host) == ip else f"{host} resolves to {ip},"
                raise UnsafeURL(f"{url}: {subject} {reason}; this server does not fetch from it")
    path = quote(parts.path or "/", safe=PRINTABLE)
    if parts.query:
        path += "?" + quote(parts.query, safe=PRINTABLE)
    return _Target(url, scheme, ascii_host, port, path, addresses)


def check_url(url: str, allowed: Collection[str]) -> list[str]:
    """The addresses `url` may be fetched from; UnsafeURL if the server must not fetch it,
    FetchFailed if its host does not resolve. `allowed`: host names or addresses (as
    written in URLs) exempt from the address check."""
    return _check(url, allowed).addresses


class _Watchdog:
    """Shuts a connection down at the download's deadline.

    Socket timeouts bound each wait only: a server sending a byte now and then would
    keep a download going for ever. A duplicate of the socket is shut down (that ends
    the connection, TLS or not) under a lock, so that it never outlives its use."""

    def __init__(self, sock: socket.socket, seconds: float) -> None:
        self._sock = sock.dup()
        self._lock = threading.Lock()
        self.fired = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if self._sock.fileno() == -1:
                return
            self.fired = True
            with contextlib.suppress(OSError):  # already closed by the server
                self._sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._timer.cancel()
        with self._lock:
            self._sock.close()


class _PinnedHTTP(http.client.HTTPConnection):
    """An HTTP connection to the checked addresses: no name lookup of its own."""

    def __init__(self, target: _Target, timeout: float, deadline: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._addresses = target.addresses
        self._step = timeout
        self._deadline = deadline
        self._watchdog: _Watchdog | None = None
        self.timed_out = False

    def connect(self) -> None:
        self.sock = self._tcp()

    def _tcp(self) -> socket.socket:
        error: OSError = ConnectionError("no address to connect to")
        for address in self._addresses:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                self.timed_out = True
                raise TimeoutError("the deadline passed")
            try:
                # a numeric address: create_connection looks nothing up
                sock = socket.create_connection((address, self.port), min(self._step, remaining))
            except OSError as exc:
                error = exc
                continue
            sock.settimeout(self._step)
            self._watchdog = _Watchdog(sock, self._deadline - time.monotonic())
            return sock
        raise error

    @property
    def expired(self) -> bool:
        return self.timed_out or (self._watchdog is not None and self._watchdog.fired)

    def finish(self) -> None:
        """Close the connection and its watchdog (http.client's own close() may come while
        the response is still read: it hands the socket over to the response)."""
        if self._watchdog is not None:
            self._watchdog.close()
        self.close()


class _PinnedHTTPS(_PinnedHTTP):
    """TLS to the checked address; SNI and the certificate check use the URL's host."""

    default_port = http.client.HTTPS_PORT

    def __init__(
        self, target: _Target, timeout: float, deadline: float, context: ssl.SSLContext
    ) -> None:
        super().__init__(target, timeout, deadline)
        self._tls = context

    def connect(self) -> None:
        self.sock = self._tls.wrap_socket(self._tcp(), server_hostname=self.host)


def _describe(exc: Exception, timeout: float) -> str:
    """A network or HTTP error in one line."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"its TLS certificate is not valid: {exc.verify_message}"
    if isinstance(exc, OSError) and isinstance(exc.strerror, str) and exc.strerror:
        return exc.strerror
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def fetch(
    url: str, target: Path, settings: Settings, deadline: float | None = None
) -> tuple[str, int, str | None]:
    """Download `url` into `target`: its sha256 (hex), size and Content-Type (if given).

    Raises UnsafeURL (refused, also on a redirect), FetchFailed (network, HTTP status,
    timeouts) or TooLarge (past `fetch_max_bytes`; no file left). `deadline` (a
    time.monotonic() value) ends the whole download; by default it lasts at most as
    long as the longest job may run."""
    start = time.monotonic()
    end = start + settings.max_execution_duration if deadline is None else deadline
    allowed = settings.fetch_allowed
    timeout = settings.fetch_timeout
    context: ssl.SSLContext | None = None
    current = previous = url
    for hops in range(MAX_REDIRECTS + 1):
        where = current if not hops else f"{url} (redirected to {current})"
        try:
            checked = _check(current, allowed)
        except UnsafeURL as exc:
            if hops:
                raise UnsafeURL(f"{previous} redirects to {exc}") from None
            raise
        except FetchFailed as exc:
            if hops:
                raise FetchFailed(f"{url} (redirected): {exc}") from None
            raise
        conn: _PinnedHTTP
        if checked.scheme == "https":
            context = context or ssl.create_default_context()
            conn = _PinnedHTTPS(checked, timeout, end, context)
        else:
            conn = _PinnedHTTP(checked, timeout, end)
        response: http.client.HTTPResponse | None = None
        try:
            conn.request("GET", checked.path, headers={"User-Agent": USER_AGENT, "Accept": "*/*"})
            response = conn.getresponse()
            if response.status in REDIRECTS:
                location = (response.getheader("Location") or "").strip()
                if not location:
                    raise FetchFailed(f"{where}: a redirect ({response.status}) without Location")
                previous, current = current, urljoin(current, location)
                continue
            if not 200 <= response.status < 300:
                raise FetchFailed(
                    f"{where}: the server answered {response.status} {response.reason}".rstrip()
                )
            length = response.getheader("Content-Length") or ""
            if length.isdigit() and int(length) > settings.fetch_max_bytes:
                raise TooLarge(f"larger than {settings.fetch_max_bytes} bytes")
            try:
                sha256, size = write_stream(response, target, settings.fetch_max_bytes)
                if conn.expired:  # a body without length ends at the shutdown: cut short
                    raise TimeoutError("the deadline passed")
            except BaseException:
                target.unlink(missing_ok=True)
                raise
            return sha256, size, response.getheader("Content-Type")
        except (OSError, http.client.HTTPException) as exc:
            if conn.expired:
                seconds = round(end - start, 1)
                raise FetchFailed(f"{where}: the download took longer than {seconds:g} s") from None
            raise FetchFailed(f"{where}: {_describe(exc, timeout)}") from None
        finally:
            if response is not None:
                response.close()  # its socket, when the connection handed it over
            conn.finish()
    raise FetchFailed(f"{url}: more than {MAX_REDIRECTS} redirects")

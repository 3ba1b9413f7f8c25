"""URL inputs and server-side request forgery: what the server refuses to fetch, and how.

Fast tests of the check (literal addresses: no network), then fetches against local HTTP
servers (redirects, size, time), then a real `opus serve`: a URL of this host refused at
submission, and a redirect to it refused at download.
"""

from __future__ import annotations

import http.server
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from opus.config import Settings
from opus.execution.fetch import FetchFailed, UnsafeURL, check_url, fetch
from opus.store.files import TooLarge
from tests.servers import Server

UWS = "{http://www.ivoa.net/xml/UWS/v1.0}"
XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
SECRET = b"the secret of this host\n"
LIMIT = 1000  # fetch_max_bytes of these tests


# -- the check, on literal addresses and names ----------------------------------------------


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://127.0.0.1:8000/x", ["127.0.0.1 is a loopback address"]),
        ("http://127.1/", ["127.1 resolves to 127.0.0.1", "loopback"]),
        ("http://2130706433/", ["resolves to 127.0.0.1", "loopback"]),
        ("http://0x7f.0.0.1/", ["resolves to 127.0.0.1", "loopback"]),
        ("http://0x7f.1/", ["resolves to 127.0.0.1", "loopback"]),
        ("http://0.0.0.0/", ["unspecified"]),
        ("http://0/", ["0.0.0.0", "unspecified"]),
        ("http://10.1.2.3/", ["private"]),
        ("http://172.16.0.1/", ["private"]),
        ("http://192.168.1.1/", ["private"]),
        ("http://100.64.0.1/", ["shared"]),
        ("http://169.254.169.254/latest/meta-data/", ["cloud metadata"]),
        ("http://169.254.1.1/", ["link-local"]),
        ("http://224.0.0.1/", ["multicast"]),
        ("http://240.0.0.1/", ["reserved"]),
        ("http://[::1]/", ["loopback"]),
        ("http://[::]/", ["unspecified"]),
        ("http://[::ffff:127.0.0.1]/", ["IPv4-mapped", "127.0.0.1", "loopback"]),
        ("http://[::ffff:169.254.169.254]/", ["IPv4-mapped", "cloud metadata"]),
        ("http://[64:ff9b::7f00:1]/", ["NAT64", "127.0.0.1", "loopback"]),
        ("http://[64:ff9b::a00:1]/", ["NAT64", "10.0.0.1", "private"]),
        ("http://[2002:7f00:1::]/", ["6to4", "127.0.0.1", "loopback"]),
        ("http://[::7f00:1]/", ["IPv4-compatible", "loopback"]),
        ("http://[fe80::1]/", ["link-local"]),
        ("http://[fd00:ec2::254]/", ["cloud metadata"]),
        ("http://[fd12:3456::1]/", ["private"]),
        ("http://[fec0::1]/", ["site-local"]),
        ("http://[ff02::1]/", ["multicast"]),
        ("http://localhost:8080/", ["localhost resolves to", "loopback"]),
    ],
)
def test_addresses_of_this_host_and_private_networks_are_refused(
    url: str, words: list[str]
) -> None:
    with pytest.raises(UnsafeURL) as caught:
        check_url(url, frozenset())
    message = str(caught.value)
    assert message.startswith(f"{url}: "), message
    assert "this server does not fetch from it" in message
    for word in words:
        assert word in message, message


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://example.org/x", ["scheme ftp", "only http and https"]),
        ("file:///etc/passwd", ["scheme file", "only http and https"]),
        ("gopher://example.org/", ["scheme gopher"]),
        ("example.org/x", ["without a scheme"]),
        ("http://user:pass@93.184.216.34/", ["passwords"]),
        ("http://user@93.184.216.34/", ["user names"]),
        ("http:///x", ["no host"]),
        ("http://93.184.216.34:0/", ["port 0"]),
        ("http://93.184.216.34:70000/", ["not a valid URL"]),
        ("http://93.184.216.34:http/", ["not a valid URL"]),
        ("http://[::1/", ["not a valid URL"]),
        ("http://93.184.216.34/a\r\nX-Injected: 1", ["control characters"]),
    ],
)
def test_urls_that_are_not_plain_http_are_refused(url: str, words: list[str]) -> None:
    with pytest.raises(UnsafeURL) as caught:
        check_url(url, frozenset())
    for word in words:
        assert word in str(caught.value), caught.value


def test_a_host_that_does_not_resolve_is_named() -> None:
    with pytest.raises(FetchFailed, match=r"cannot resolve host no-such-host\.invalid"):
        check_url("http://no-such-host.invalid/x", frozenset())


@pytest.mark.parametrize(
    ("url", "addresses"),
    [
        ("http://93.184.216.34/x", ["93.184.216.34"]),
        ("https://93.184.216.34:8443/x?y=1", ["93.184.216.34"]),
        ("http://[2606:2800:220:1:248:1893:25c8:1946]/", ["2606:2800:220:1:248:1893:25c8:1946"]),
        ("http://[64:ff9b::5db8:d822]/", ["64:ff9b::5db8:d822"]),  # NAT64 of a public one
    ],
)
def test_public_addresses_pass(url: str, addresses: list[str]) -> None:
    assert check_url(url, frozenset()) == addresses


def test_the_allow_list_names_hosts_as_written_in_urls() -> None:
    allowed = Settings(fetch_allow_hosts=" 127.0.0.1, Localhost ,[::1]").fetch_allowed
    assert check_url("http://127.0.0.1:8000/x", allowed) == ["127.0.0.1"]
    assert "127.0.0.1" in check_url("http://LOCALHOST:8000/x", allowed)
    assert check_url("http://[::1]:8000/x", allowed) == ["::1"]
    # another spelling of an allowed address is not allowed, nor another name of it
    for url in ("http://127.1/", "http://2130706433/", "http://[::ffff:127.0.0.1]/"):
        with pytest.raises(UnsafeURL):
            check_url(url, allowed)
    with pytest.raises(UnsafeURL, match="localhost resolves to"):
        check_url("http://localhost/", {"127.0.0.1"})


# -- fetches against local servers ------------------------------------------------------------


class Origin:
    """A local HTTP server (another service of this host, or an archive when allowed)."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[tuple[str, str]] = []  # (path, Host header)
        origin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                origin.requests.append((self.path, self.headers.get("Host", "")))
                origin.answer(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Quiet(http.server.ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that gave up: expected here

        self.httpd = Quiet(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = int(self.httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]

    def answer(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?")[0]
        redirects = {
            "/to-file": "/file",
            "/to-localhost": f"http://localhost:{self.port}/secret.txt",
            "/to-metadata": "http://169.254.169.254/latest/meta-data/",
            "/to-ftp": "ftp://example.org/x",
            "/loop": "/loop",
        }
        if path in redirects:
            handler.send_response(302)
            handler.send_header("Location", redirects[path])
            handler.end_headers()
        elif path in ("/file", "/secret.txt"):
            body = b"hello\n" if path == "/file" else SECRET
            handler.send_response(200)
            handler.send_header("Content-Type", "text/plain; charset=utf-8")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
        elif path in ("/big", "/big-declared"):
            handler.send_response(200)
            if path == "/big-declared":
                handler.send_header("Content-Length", str(5 * LIMIT))
            handler.end_headers()  # /big: no length, the body ends when the server closes
            handler.wfile.write(b"x" * 5 * LIMIT)
        elif path == "/stall":
            time.sleep(3)
        elif path == "/trickle":
            handler.send_response(200)
            handler.end_headers()
            for _ in range(40):
                handler.wfile.write(b"x")
                handler.wfile.flush()
                time.sleep(0.1)
        else:
            handler.send_error(404)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def origin() -> Iterator[Origin]:
    running = Origin()
    yield running
    running.stop()


def settings(tmp_path: Path, allow: str = "127.0.0.1") -> Settings:
    return Settings(
        data_dir=tmp_path, fetch_allow_hosts=allow, fetch_timeout=0.5, fetch_max_bytes=LIMIT
    )


def test_an_allowed_host_is_fetched(origin: Origin, tmp_path: Path) -> None:
    target = tmp_path / "got"
    sha256, size, content_type = fetch(f"{origin.url}/file", target, settings(tmp_path))
    assert target.read_bytes() == b"hello\n" and size == 6
    assert sha256 == "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
    assert content_type == "text/plain; charset=utf-8"
    assert origin.requests == [("/file", f"127.0.0.1:{origin.port}")]


def test_a_redirect_is_followed_and_checked_again(origin: Origin, tmp_path: Path) -> None:
    target = tmp_path / "got"
    fetch(f"{origin.url}/to-file", target, settings(tmp_path))
    assert target.read_bytes() == b"hello\n"
    assert origin.paths() == ["/to-file", "/file"]


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/to-localhost", ["redirects to http://localhost:", "localhost resolves to", "loopback"]),
        ("/to-metadata", ["redirects to http://169.254.169.254/", "cloud metadata"]),
        ("/to-ftp", ["redirects to ftp://example.org/x", "scheme ftp"]),
    ],
)
def test_a_redirect_to_a_refused_address_is_not_followed(
    origin: Origin, tmp_path: Path, path: str, words: list[str]
) -> None:
    target = tmp_path / "got"
    with pytest.raises(UnsafeURL) as caught:
        fetch(f"{origin.url}{path}", target, settings(tmp_path))
    assert str(caught.value).startswith(f"{origin.url}{path} redirects to ")
    for word in words:
        assert word in str(caught.value), caught.value
    assert origin.paths() == [path]  # the secret was never asked for
    assert not target.exists()


def test_redirects_are_limited(origin: Origin, tmp_path: Path) -> None:
    with pytest.raises(FetchFailed, match="more than 5 redirects"):
        fetch(f"{origin.url}/loop", tmp_path / "got", settings(tmp_path))
    assert len(origin.requests) == 6


def test_a_refused_host_is_not_contacted(origin: Origin, tmp_path: Path) -> None:
    with pytest.raises(UnsafeURL, match="loopback"):
        fetch(f"{origin.url}/secret.txt", tmp_path / "got", settings(tmp_path, allow=""))
    assert origin.requests == []


def test_an_error_status_is_named(origin: Origin, tmp_path: Path) -> None:
    with pytest.raises(FetchFailed, match=r"/missing: the server answered 404 Not Found$"):
        fetch(f"{origin.url}/missing", tmp_path / "got", settings(tmp_path))
    assert not (tmp_path / "got").exists()


@pytest.mark.parametrize("path", ["/big", "/big-declared"])
def test_a_body_past_the_limit_stops(origin: Origin, tmp_path: Path, path: str) -> None:
    with pytest.raises(TooLarge):
        fetch(f"{origin.url}{path}", tmp_path / "got", settings(tmp_path))
    assert not (tmp_path / "got").exists()


def test_a_server_that_does_not_answer_times_out(origin: Origin, tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(FetchFailed, match=r"no answer within 0\.5 s"):
        fetch(f"{origin.url}/stall", tmp_path / "got", settings(tmp_path))
    assert 0.4 < time.monotonic() - start < 2


def test_a_download_that_trickles_stops_at_the_deadline(origin: Origin, tmp_path: Path) -> None:
    """A byte every 0.1 s never trips the 0.5 s timeout: the deadline ends it."""
    start = time.monotonic()
    with pytest.raises(FetchFailed, match=r"took longer than 1 s"):
        fetch(f"{origin.url}/trickle", tmp_path / "got", settings(tmp_path), deadline=start + 1)
    assert 0.9 < time.monotonic() - start < 2.5
    assert not (tmp_path / "got").exists()


def test_the_connection_goes_to_the_address_checked(
    origin: Origin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: a name that resolves to an allowed address, then to another one.
    The host is looked up once; the connection goes to what the check saw."""
    real = socket.getaddrinfo
    lookups: list[str] = []

    def rebinding(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "rebind.test":
            return real(host, port, *args, **kwargs)
        lookups.append(host)
        address = "127.0.0.1" if len(lookups) == 1 else "10.255.255.1"
        return real(address, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    target = tmp_path / "got"
    url = f"http://rebind.test:{origin.port}/file"
    fetch(url, target, settings(tmp_path, allow="rebind.test"))
    assert target.read_bytes() == b"hello\n"
    assert lookups == ["rebind.test"]
    assert origin.requests == [("/file", f"rebind.test:{origin.port}")]
    # without the allow-list, the same name is refused by its address
    lookups.clear()
    with pytest.raises(UnsafeURL, match=r"rebind\.test resolves to 127\.0\.0\.1, a loopback"):
        fetch(url, target, settings(tmp_path, allow=""))


@pytest.fixture
def tls_origin(tmp_path: Path) -> Iterator[tuple[Origin, Path, list[str | None]]]:
    """An HTTPS server whose certificate names localhost only; the SNI names it was sent."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    try:
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
                *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
                *("-addext", "subjectAltName=DNS:localhost"),
            ],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"no openssl to make a test certificate: {exc}")
    names: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda _sock, name, _ctx: names.append(name)
    running = Origin(context)
    yield running, cert, names
    running.stop()


def test_https_checks_the_certificate_against_the_urls_host(
    tls_origin: tuple[Origin, Path, list[str | None]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    origin, cert, names = tls_origin
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trusted by the default context
    target = tmp_path / "got"
    url = f"https://localhost:{origin.port}/file"
    fetch(url, target, settings(tmp_path, allow="localhost"))
    assert target.read_bytes() == b"hello\n"
    assert names[-1] == "localhost"
    assert origin.requests[-1] == ("/file", f"localhost:{origin.port}")
    # the same server by its address: the certificate does not name it
    with pytest.raises(FetchFailed, match="certificate"):
        fetch(f"https://127.0.0.1:{origin.port}/file", target, settings(tmp_path))
    # and a certificate nobody vouches for
    monkeypatch.delenv("SSL_CERT_FILE")
    with pytest.raises(FetchFailed, match="certificate"):
        fetch(url, target, settings(tmp_path, allow="localhost"))


# -- end to end: a real server ---------------------------------------------------------------


@pytest.fixture
def secret_origin() -> Iterator[Origin]:
    """Another service of the server's host, with something to hide."""
    running = Origin()
    yield running
    running.stop()


def test_a_url_input_of_this_host_is_refused_at_submission(
    start_server: Callable[..., Server], secret_origin: Origin
) -> None:
    server = start_server()  # default settings: no host allowed
    response = server.session.post(
        server.rest("opus_append"),
        data={"input": f"{secret_origin.url}/secret.txt", "text": "x", "PHASE": "RUN"},
        allow_redirects=False,
    )
    assert response.status_code == 400, response.text
    assert "input" in response.text and "127.0.0.1 is a loopback address" in response.text
    assert "Traceback" not in response.text
    assert secret_origin.requests == []
    listing = server.session.get(server.rest("opus_append"))
    assert listing.status_code == 200
    assert etree.fromstring(listing.content).find(f"{UWS}jobref") is None
    assert not any((server.data_dir / "jobs").glob("*"))


def test_a_redirect_to_this_host_ends_the_job_in_error(
    start_server: Callable[..., Server], secret_origin: Origin
) -> None:
    """127.0.0.1 is allowed (an archive there), localhost is not: the redirect is refused
    when the job downloads its input, and the secret is in no result."""
    server = start_server(
        {"OPUS_FETCH_ALLOW_HOSTS": "127.0.0.1", "OPUS_FETCH_MAX_BYTES": str(LIMIT)}
    )
    url = server.create("opus_append", input=f"{secret_origin.url}/to-localhost", text="x")
    doc = server.wait_final(url)
    assert doc.findtext(f"{UWS}phase") == "ERROR"
    message = server.session.get(f"{url}/error").text
    assert message.startswith("input: "), message
    assert "redirects to http://localhost:" in message and "loopback" in message, message
    assert secret_origin.paths() == ["/to-localhost"]
    for result in doc.iterfind(f"{UWS}results/{UWS}result"):
        assert SECRET not in server.session.get(str(result.get(XLINK_HREF))).content
    job = url.rsplit("/", 1)[-1]
    for path in (server.data_dir / "jobs" / job).rglob("*"):
        assert not path.is_file() or SECRET not in path.read_bytes(), path
    # the size limit ends a download too
    url = server.create("opus_append", input=f"{secret_origin.url}/big", text="x")
    assert server.wait_final(url).findtext(f"{UWS}phase") == "ERROR"
    message = server.session.get(f"{url}/error").text
    assert message == f"input: {secret_origin.url}/big is larger than {LIMIT} bytes", message

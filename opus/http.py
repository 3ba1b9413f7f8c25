"""HTTP helpers shared by every set of routes: typed routing, the request's base URL and
parameters, content types, and every failure turned into a status and one line of text."""

from __future__ import annotations

import functools
import logging
import re
import tempfile
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

import bottle
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from opus.auth import CHALLENGES, Caller, Identities
from opus.errors import BadRequest, OpusError, ParameterError

XML = "application/xml; charset=utf-8"
TEXT = "text/plain; charset=utf-8"

log = logging.getLogger(__name__)
SPOOL_IN_MEMORY = 1 << 20  # a chunked body larger than this is spooled to a temporary file

Handler = TypeVar("Handler", bound=Callable[..., Any])

# bottle's multipart parser keeps each part under MEMFILE_MAX (100 KiB) in memory and
# refuses a form once those parts add up to MEMFILE_MAX: five alerts of 66 KiB were a
# 400 "Memory limit reached". Parts stay in memory up to the same size each, but may add
# up to this (the body itself is bounded by OPUS_MAX_UPLOAD_BYTES before it is read).
FORM_MEMORY = 64 << 20


class _MultipartParser(bottle._MultipartParser):  # type: ignore[misc]
    def __init__(self, *args: Any, mem_limit: int, **kwargs: Any) -> None:
        super().__init__(*args, mem_limit=max(mem_limit, FORM_MEMORY), **kwargs)


bottle._MultipartParser = _MultipartParser


def router(app: bottle.Bottle) -> Callable[..., Callable[[Handler], Handler]]:
    """app.route with types: bottle has no annotations."""

    def route(path: str, method: str = "GET") -> Callable[[Handler], Handler]:
        decorator: Callable[[Handler], Handler] = app.route(path, method)
        return decorator

    return route


CALLER = "opus.caller"  # the request's Caller, in its WSGI environ


def caller() -> Caller:
    """Who the current request acts as (set by `identify` before every route)."""
    found: Caller = bottle.request.environ[CALLER]
    return found


# The caller a web session signs in (path, method, session cookie), if any
SessionCaller = Callable[[str, str, str | None], Caller | None]


def identify(
    identities: Identities,
    open_paths: frozenset[str],
    session: SessionCaller | None = None,
    pages: Callable[[str], bool] = lambda path: False,
    cookie: str = "",
) -> Callable[..., Any]:
    """A bottle plugin that finds every request's caller before its route runs: from its
    Authorization header, else from its web session. The open paths (VOSI availability
    and capabilities) answer without credentials even where anonymous access is off, so
    that clients can learn what the server needs; so do the web `pages`, which send a
    visitor to the sign-in page themselves."""

    def plugin(callback: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(callback)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            request = bottle.request
            header = request.get_header("Authorization")
            found = None
            if not header and session is not None:
                found = session(request.path, request.method, request.get_cookie(cookie))
            if found is None and not header and (request.path in open_paths or pages(request.path)):
                found = identities.anonymous
            request.environ[CALLER] = found or identities.caller(header)
            return callback(*args, **kwargs)

        return wrapper

    return plugin


def base_url() -> str:
    parts = bottle.request.urlparts
    return f"{parts.scheme}://{parts.netloc}{bottle.request.script_name.rstrip('/')}"


def text(body: str) -> str:
    bottle.response.content_type = TEXT
    return body


def xml_body(body: bytes) -> bytes:
    bottle.response.content_type = XML
    return body


def answer(body: bytes, content_type: str) -> bytes:
    bottle.response.content_type = content_type
    return body


def content_disposition(file_name: str, kind: str = "inline") -> str:
    """A Content-Disposition header (RFC 6266) for any file name: a quoted ASCII name that
    cannot break out of its quotes, and the name itself percent-encoded when it differs."""
    fallback = re.sub(r"[^A-Za-z0-9._-]", "_", file_name)[-200:] or "file"
    header = f'{kind}; filename="{fallback}"'
    if file_name and fallback != file_name:
        header += f"; filename*=UTF-8''{quote(file_name, safe='', errors='replace')}"
    return header


def see_other(url: str) -> bottle.HTTPResponse:
    return bottle.HTTPResponse(status=303, headers={"Location": url})


def _decoded(source: bottle.FormsDict) -> list[tuple[str, str]]:
    try:
        return list(source.decode().allitems())
    except UnicodeDecodeError:
        raise BadRequest("the request's parameters are not UTF-8 text") from None


def query_values(name: str) -> list[str]:
    """All values of a query parameter, its name matched case-insensitively (DALI)."""
    wanted = name.upper()
    return [v for k, v in _decoded(bottle.request.query) if k.upper() == wanted]


def query_value(name: str) -> str | None:
    values = query_values(name)
    if len(values) > 1:
        raise ParameterError(name, "given more than once")
    return values[0] if values else None


def all_params() -> dict[str, list[str]]:
    """Query and form parameters, names upper-cased (DALI names are case-insensitive)."""
    found: dict[str, list[str]] = {}
    for source in (bottle.request.query, bottle.request.forms):
        for key, value in _decoded(source):
            found.setdefault(key.upper(), []).append(value)
    return found


def one_line(message: str) -> str:
    """`message` with line breaks and other unprintable characters escaped."""
    if message.isprintable():
        return message
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in message)


def plain(status: int, message: str) -> bottle.HTTPResponse:
    return bottle.HTTPResponse(
        body=one_line(message) + "\n", status=status, headers={"Content-Type": TEXT}
    )


def request_guard(max_body: int) -> Callable[[], None]:
    """A before_request hook: a path that is not UTF-8 is answered 400, a body
    over `max_body` bytes (0: no limit) 413, before bottle reads it. A chunked body (no
    Content-Length) is read here up to the limit, and handed on with its length."""
    limit = f"the limit of {max_body} bytes (OPUS_MAX_UPLOAD_BYTES)"

    def guard() -> None:
        environ = bottle.request.environ
        if not _is_utf8(environ.get("bottle.raw_path", "")):
            raise plain(400, "the request's path is not UTF-8")
        length_text = environ.get("CONTENT_LENGTH") or ""
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if length_text and not chunked:
            if not length_text.isascii() or not length_text.isdigit():
                raise plain(400, f"Content-Length {length_text!r} is not a number of bytes")
            if max_body and int(length_text) > max_body:
                raise plain(413, f"the request body of {length_text} bytes is over {limit}")
        elif chunked:
            environ["wsgi.input"], size = _spool(environ["wsgi.input"], max_body)
            if max_body and size > max_body:
                raise plain(413, f"the request body is over {limit}")
            # the server has taken the chunks apart: bottle reads the body by its length
            environ["CONTENT_LENGTH"] = str(size)
            del environ["HTTP_TRANSFER_ENCODING"]

    return guard


def _is_utf8(wsgi_text: str) -> bool:
    """Whether a WSGI environ string (the bytes sent, as latin-1) is UTF-8."""
    try:
        wsgi_text.encode("latin-1").decode()
    except UnicodeEncodeError:  # not bytes as latin-1: text already
        return True
    except UnicodeDecodeError:
        return False
    return True


def _spool(stream: Any, max_body: int) -> tuple[Any, int]:
    """The stream's bytes in a temporary file (the request's body from now on: it is closed
    with the request), up to one byte over max_body; their size."""
    spooled = tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY)  # noqa: SIM115
    size, wanted = 0, (max_body + 1 if max_body else None)
    while wanted is None or size < wanted:
        chunk = stream.read(1 << 16 if wanted is None else min(1 << 16, wanted - size))
        if not chunk:
            break
        spooled.write(chunk)
        size += len(chunk)
    spooled.seek(0)
    return spooled, size


def errors_as_text(callback: Callable[..., Any]) -> Callable[..., Any]:
    """Every failure becomes a status and a one-line text: never a traceback."""

    @functools.wraps(callback)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return callback(*args, **kwargs)
        except bottle.HTTPResponse:
            raise
        except OpusError as exc:
            response = plain(exc.status, exc.message)
            if exc.status == 401:
                for challenge in CHALLENGES:
                    response.add_header("WWW-Authenticate", challenge)
            return response
        except (OperationalError, PoolTimeout) as exc:
            log.error(
                "database unavailable on %s: %s", bottle.request.path, str(exc).splitlines()[0]
            )
            response = plain(503, "the database is unavailable; try again later")
            response.set_header("Retry-After", "5")
            return response
        except Exception:
            log.exception("internal error on %s %s", bottle.request.method, bottle.request.path)
            return plain(500, "internal server error; the server log has the details")

    return wrapper


def plain_error_page(response: bottle.HTTPError) -> str:
    """bottle's own errors (no such route, method not allowed) as text, not an HTML page."""
    response.set_header("Content-Type", TEXT)
    line = f"{response.status_line}: {bottle.request.method} {bottle.request.path}"
    if response.status_code in (400, 413) and isinstance(response.body, str) and response.body:
        line += f": {response.body}"  # why: a multipart body bottle could not read
    return one_line(line) + "\n"

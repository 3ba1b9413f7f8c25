"""HTTP helpers shared by every set of routes: typed routing, the request's base URL and
parameters, content types, and every failure turned into a status and one line of text."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import bottle
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from opus.auth import CHALLENGES, Caller, Identities
from opus.errors import OpusError, ParameterError

XML = "application/xml; charset=utf-8"
TEXT = "text/plain; charset=utf-8"

log = logging.getLogger(__name__)

Handler = TypeVar("Handler", bound=Callable[..., Any])


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


def identify(identities: Identities, open_paths: frozenset[str]) -> Callable[..., Any]:
    """A bottle plugin that finds every request's caller before its route runs. The open
    paths (VOSI availability and capabilities) answer without credentials even where
    anonymous access is off, so that clients can learn what the server needs."""

    def plugin(callback: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(callback)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            header = bottle.request.get_header("Authorization")
            if not header and bottle.request.path in open_paths:
                bottle.request.environ[CALLER] = identities.anonymous
            else:
                bottle.request.environ[CALLER] = identities.caller(header)
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


def see_other(url: str) -> bottle.HTTPResponse:
    return bottle.HTTPResponse(status=303, headers={"Location": url})


def query_values(name: str) -> list[str]:
    """All values of a query parameter, its name matched case-insensitively (DALI)."""
    wanted = name.upper()
    return [v for k, v in bottle.request.query.decode().allitems() if k.upper() == wanted]


def query_value(name: str) -> str | None:
    values = query_values(name)
    if len(values) > 1:
        raise ParameterError(name, "given more than once")
    return values[0] if values else None


def all_params() -> dict[str, list[str]]:
    """Query and form parameters, names upper-cased (DALI names are case-insensitive)."""
    found: dict[str, list[str]] = {}
    for source in (bottle.request.query, bottle.request.forms):
        for key, value in source.decode().allitems():
            found.setdefault(key.upper(), []).append(value)
    return found


def plain(status: int, message: str) -> bottle.HTTPResponse:
    return bottle.HTTPResponse(body=message + "\n", status=status, headers={"Content-Type": TEXT})


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
    return f"{response.status_line}: {bottle.request.method} {bottle.request.path}\n"

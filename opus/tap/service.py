"""TAP 1.1 rules: a query's parameters, its uploads, its translation and its run.

Knows nothing of HTTP. A sync query and an async job (`opus.tap.jobs`) run the same
`TapService.execute`; its errors are TapError, whose message the error VOTable carries.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from opus.auth import Caller, visible_nodes
from opus.config import Settings
from opus.execution.fetch import FetchError, fetch
from opus.ids import namespace_uri, public_base, qualified_name
from opus.store.db import Database
from opus.store.files import TooLarge
from opus.store.readonly import QueryFailed, QueryTimeout, ReadOnlyQueries
from opus.tap.adql import AdqlError, Translation, translate
from opus.tap.results import Column, error_document, resolve_format, write_result
from opus.tap.schema import Reader
from opus.tap.upload import UploadError, UploadTable, parse_upload_list, read_upload

LANGS = ("ADQL", "ADQL-2.0", "ADQL-2.1")
# What a TAP query takes (TAP 1.1 / DALI): other parameters are ignored.
TAP_PARAMETERS = (
    "REQUEST",
    "LANG",
    "QUERY",
    "MAXREC",
    "RESPONSEFORMAT",
    "FORMAT",
    "VERSION",
    "UPLOAD",
)
MAX_UPLOADS = 8
# Translations kept per process: parsing, checking and compiling the views costs 5-15 ms,
# while clients (TOPCAT, scripts polling) send the same few queries again and again
TRANSLATIONS_KEPT = 512


class TapError(Exception):
    """What is wrong with a query or its run, said to the client in an error VOTable."""


@dataclass(frozen=True)
class TapRequest:
    query: str
    maxrec: int
    format: str
    uploads: list[tuple[str, str]]  # (table name, URI: param:<part> or http(s)://...)


def tap_request(fields: Sequence[tuple[str, str]], settings: Settings) -> TapRequest:
    """The query's parameters (names in any case; the first value of each counts, UPLOAD
    may be repeated; empty values are as not given)."""
    values: dict[str, str] = {}
    uploads: list[tuple[str, str]] = []
    for name, value in fields:
        key = name.upper()
        if key == "UPLOAD" and value.strip():
            try:
                uploads += parse_upload_list(value)
            except UploadError as exc:
                raise TapError(f"UPLOAD: {exc}") from None
        elif key in TAP_PARAMETERS and value.strip() and key not in values:
            values[key] = value.strip()
    request = values.get("REQUEST")
    if request is not None and request.lower() != "doquery":
        raise TapError(f"REQUEST={request!r}: the only request is doQuery")
    lang = values.get("LANG")
    if lang is None:
        raise TapError("LANG is missing: give LANG=ADQL")
    if lang.upper() not in LANGS:
        raise TapError(f"LANG={lang!r} is not supported: use {', '.join(LANGS)}")
    query = values.get("QUERY")
    if query is None:
        raise TapError("QUERY is missing: give an ADQL query")
    maxrec = settings.tap_maxrec
    if "MAXREC" in values:
        text = values["MAXREC"]
        if not text.isascii() or not text.isdigit():
            raise TapError(f"MAXREC={text!r} is not a whole number from 0")
        maxrec = int(text[:12])
    maxrec = min(maxrec, settings.tap_hard_maxrec)
    try:
        fmt = resolve_format(values.get("RESPONSEFORMAT") or values.get("FORMAT"))
    except ValueError as exc:
        raise TapError(f"RESPONSEFORMAT: {exc}") from None
    if len(uploads) > MAX_UPLOADS:
        raise TapError(f"UPLOAD: at most {MAX_UPLOADS} tables")
    names = [n.lower() for n, _ in uploads]
    if len(set(names)) != len(names):
        raise TapError("UPLOAD: a table name is given twice")
    return TapRequest(query, maxrec, fmt, uploads)


class TapService:
    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self.queries = ReadOnlyQueries(db)
        self._translations: OrderedDict[tuple[Any, ...], Translation] = OrderedDict()
        self._lock = threading.Lock()

    def base(self, request_base: str) -> str:
        """The public base URL: the setting, else what the request shows."""
        return public_base(self.settings.public_url or request_base)

    def reader(self, caller: Caller, base: str) -> Reader:
        return Reader(namespace_uri(base), base, visible_nodes(caller), self.db.is_sqlite)

    # -- uploads ---------------------------------------------------------------------------

    def upload_bytes(self, uri: str, parts: Mapping[str, bytes], name: str) -> bytes:
        """The bytes of one uploaded table: an inline part (param:) or an http(s) URL,
        fetched as URL inputs are (public addresses only)."""
        limit = self.settings.tap_upload_max_bytes
        if uri.startswith("param:"):
            part = uri.removeprefix("param:")
            if part not in parts:
                raise TapError(f"UPLOAD {name}: no part {part!r} was sent with the request")
            data = parts[part]
        elif uri.split(":", 1)[0].lower() in ("http", "https"):
            settings = self.settings.model_copy(update={"fetch_max_bytes": limit})
            with tempfile.TemporaryDirectory() as folder:
                target = Path(folder) / "upload"
                try:
                    fetch(uri, target, settings, time.monotonic() + settings.fetch_timeout)
                except (FetchError, TooLarge) as exc:
                    raise TapError(f"UPLOAD {name}: {exc}") from None
                data = target.read_bytes()
        else:
            raise TapError(f"UPLOAD {name}: {uri!r} is neither param:<part> nor an http(s) URL")
        if len(data) > limit:
            raise TapError(f"UPLOAD {name}: the table is over {limit} bytes")
        return data

    def tables(self, uploads: Sequence[tuple[str, bytes]]) -> dict[str, UploadTable]:
        found: dict[str, UploadTable] = {}
        for name, data in uploads:
            try:
                table = read_upload(name, data, self.settings.tap_upload_max_rows)
            except UploadError as exc:
                raise TapError(f"UPLOAD: {exc}") from None
            found[table.name.lower()] = table
        return found

    # -- running ---------------------------------------------------------------------------

    def execute(
        self,
        caller: Caller,
        request: TapRequest,
        uploads: Mapping[str, UploadTable],
        base: str,
        timeout: float,
    ) -> bytes:
        """The result document of a query (TapError for a query that cannot run)."""
        columns, rows, overflow = self.rows(caller, request, uploads, base, timeout)
        return write_result(columns, rows, request.format, overflow=overflow, query=request.query)

    def rows(
        self,
        caller: Caller,
        request: TapRequest,
        uploads: Mapping[str, UploadTable],
        base: str,
        timeout: float,
    ) -> tuple[list[Column], list[tuple[Any, ...]], bool]:
        """A query's result: its columns, its rows (MAXREC at most, values as the result
        documents write them) and whether there were more (TapError if it cannot run)."""
        translation = self.translation(caller, request, uploads, base)
        try:
            names, rows = self.queries.run(translation.sql, timeout, translation.limit)
        except QueryTimeout:
            raise TapError(
                f"the query ran past its time limit of {timeout:g} s and was stopped: "
                "ask for less, or run it as an async job (/tap/async)"
            ) from None
        except QueryFailed as exc:
            raise TapError(f"the database could not run the query: {exc}") from None
        overflow = len(rows) > request.maxrec
        rows = rows[: request.maxrec]
        columns = _columns(translation.columns, names, rows)
        return columns, [_row(r, columns) for r in rows], overflow

    def translation(
        self, caller: Caller, request: TapRequest, uploads: Mapping[str, UploadTable], base: str
    ) -> Translation:
        """The query's SQL for this caller, kept for the next identical query (one without
        uploads: theirs hold the uploaded rows). The key holds what the SQL depends on:
        the text, MAXREC, the base URL and what of the caller the visibility rule reads."""
        key = (
            request.query,
            request.maxrec,
            base,
            caller.name,
            caller.groups,
            caller.admin,
            caller.anonymous_public,
        )
        if not uploads:
            with self._lock:
                kept = self._translations.get(key)
                if kept is not None:
                    self._translations.move_to_end(key)
                    return kept
        try:
            translation = translate(
                request.query,
                self.reader(caller, base),
                uploads=uploads,
                maxrec=request.maxrec,
                max_depth=self.settings.tap_max_depth,
                qname=lambda given: qualified_name(given, base),
            )
        except AdqlError as exc:
            raise TapError(str(exc)) from None
        if not uploads:
            with self._lock:
                self._translations[key] = translation
                while len(self._translations) > TRANSLATIONS_KEPT:
                    self._translations.popitem(last=False)
        return translation

    def newest(self, caller: Caller, base: str) -> tuple[str | None, str | None]:
        """The URIs of the newest entity and activity the caller may see (for examples)."""
        found: list[str | None] = []
        for table, order in (("entity", "generatedAtTime"), ("activity", "startTime")):
            query = f"SELECT TOP 1 id FROM provenance.{table} ORDER BY {order} DESC"
            translation = translate(
                query,
                self.reader(caller, base),
                uploads={},
                maxrec=1,
                max_depth=1,
                qname=lambda given: given,
            )
            _, rows = self.queries.run(translation.sql, self.settings.tap_sync_timeout, 1)
            found.append(rows[0][0] if rows else None)
        return found[0], found[1]

    def sync(
        self,
        caller: Caller,
        fields: Sequence[tuple[str, str]],
        parts: Mapping[str, bytes],
        request_base: str,
    ) -> tuple[bytes, str, bool]:
        """A sync query: (document, its format key, whether it is an error document)."""
        fmt = "votable"
        try:
            request = tap_request(fields, self.settings)
            fmt = request.format
            tables = self.tables(
                [(n, self.upload_bytes(uri, parts, n)) for n, uri in request.uploads]
            )
            body = self.execute(
                caller, request, tables, self.base(request_base), self.settings.tap_sync_timeout
            )
        except TapError as exc:
            return error_document(str(exc)), "votable", True
        return body, fmt, False


def _columns(known: list[Column], names: list[str], rows: list[tuple[Any, ...]]) -> list[Column]:
    """The result's columns: those the translation knows, the others typed by their
    values (a column of no value is text)."""
    found = list(known) if len(known) == len(names) else [Column(n, "") for n in names]
    for i, column in enumerate(found):
        if column.datatype:
            continue
        values = [r[i] for r in rows if r[i] is not None]
        found[i] = replace(column, **_typed(values))
    return found


def _typed(values: list[Any]) -> dict[str, Any]:
    if values and all(isinstance(v, bool) for v in values):
        return {"datatype": "boolean", "arraysize": None}
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return {"datatype": "long", "arraysize": None}
    if values and all(isinstance(v, int | float | Decimal) for v in values):
        return {"datatype": "double", "arraysize": None}
    if values and all(isinstance(v, datetime) for v in values):
        return {"datatype": "char", "arraysize": "*", "xtype": "timestamp"}
    return {"datatype": "char", "arraysize": "*"}


def _row(row: tuple[Any, ...], columns: list[Column]) -> tuple[Any, ...]:
    return tuple(_value(v, c) for v, c in zip(row, columns, strict=True))


def _value(value: Any, column: Column) -> Any:
    if value is None:
        return None
    if column.xtype == "timestamp" and isinstance(value, datetime):
        return value
    if column.xtype == "timestamp" and isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace(" ", "T"))
        except ValueError:
            return value
    if column.datatype == "boolean":
        return bool(value)
    if column.datatype in ("short", "int", "long") and not isinstance(value, int):
        return int(value)
    if column.datatype in ("float", "double") and not isinstance(value, float):
        return float(value)
    if column.datatype == "char" and not isinstance(value, str):
        return str(value)
    return value

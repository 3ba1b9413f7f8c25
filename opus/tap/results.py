"""A query's result table written as TAP 1.1 answers it, and TAP error documents.

Formats: VOTable 1.4 with BINARY2 (the default) or TABLEDATA, CSV (RFC 4180), TSV and
JSON. The VOTable is built as text and bytes by hand, column by column (astropy's writer
is far too slow for a server), in one RESOURCE type="results": QUERY_STATUS OK, the
query, the extra INFOs, the TABLE, then QUERY_STATUS OVERFLOW when rows were left out.

Choices, the same in every format:

- timestamps (xtype="timestamp") are ISO 8601 UTC without a zone letter (DALI allows it):
  `YYYY-MM-DDTHH:MM:SS.fff`, with six decimals only when a value has sub-millisecond
  digits (the store keeps milliseconds, as UWS shows them);
- NaN and None are nulls: an empty TD, a set null flag in BINARY2, an empty CSV/TSV cell,
  JSON null; infinities are `+Inf`/`-Inf` in TABLEDATA, `Infinity`/`-Infinity` in
  CSV/TSV, null in JSON (which has no infinities); booleans are T/F in TABLEDATA,
  true/false in CSV/TSV and JSON;
- VOTable `char` is ASCII (astropy refuses anything else in BINARY2): a char column whose
  values in this result are not all ASCII is written as `unicodeChar` (UTF-16 in BINARY2),
  so its FIELD says what its bytes are (JSON's metadata keeps the declared datatype:
  JSON has no such limit); a string column without arraysize is written
  with arraysize="*" (VOTable would read a missing arraysize as one character);
- characters XML cannot hold (control characters, lone surrogates, U+FFFE/U+FFFF) are
  replaced by U+FFFD in XML text; BINARY2 carries control characters as they are.
"""

from __future__ import annotations

import base64
import csv
import io
import math
import re
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain
from typing import Any

import orjson


@dataclass(frozen=True)
class Column:
    name: str
    datatype: str  # VOTable: char, unicodeChar, boolean, short, int, long, float, double
    arraysize: str | None = None  # "*" for variable-length strings; None for scalars
    xtype: str | None = None  # e.g. "timestamp" (values are naive UTC datetime.datetime)
    unit: str | None = None
    ucd: str | None = None
    utype: str | None = None
    description: str | None = None


FORMATS: dict[str, str] = {
    "votable": "application/x-votable+xml;serialization=BINARY2",
    "votable/td": "application/x-votable+xml;serialization=TABLEDATA",
    "csv": "text/csv;header=present",
    "tsv": "text/tab-separated-values",
    "json": "application/json",
}
# Error documents are VOTables of no serialization in particular (FORMATS["votable"] says
# BINARY2, which they do not hold: routes had better send this one with them).
ERROR_CONTENT_TYPE = "application/x-votable+xml"

VOTABLE_NS = "http://www.ivoa.net/xml/VOTable/v1.3"
_VOTABLE_TYPES = ("application/x-votable+xml", "text/xml")
_ALIASES = {
    "votable": "votable",
    "votable/b2": "votable",
    "votable/td": "votable/td",
    "csv": "csv",
    "text/csv": "csv",
    "tsv": "tsv",
    "text/tab-separated-values": "tsv",
    "json": "json",
    "application/json": "json",
}
_SERIALIZATIONS = {"binary2": "votable", "tabledata": "votable/td"}


def resolve_format(value: str | None) -> str:
    """The format key of a RESPONSEFORMAT (or FORMAT) value: a TAPRegExt short name or a
    media type (TAP 1.1 section 2.7.1, DALI), in any case, parameters in any spacing;
    nothing given is the default, VOTable BINARY2. ValueError for any other."""
    if value is None or not value.strip():
        return "votable"
    kind, *parameters = "".join(value.split()).lower().split(";")
    options = dict(p.partition("=")[::2] for p in parameters if p)
    found: str | None = None
    if kind in _VOTABLE_TYPES:
        found = _SERIALIZATIONS.get(options.get("serialization", "binary2"))
    elif kind in _ALIASES and not (
        kind == "text/csv" and options.get("header", "present") != "present"
    ):
        found = _ALIASES[kind]
    if found is None:
        raise ValueError(
            f"{value!r} is not a format of this service: give votable (BINARY2), votable/td "
            "(TABLEDATA), csv, tsv or json, or one of their media types"
        )
    return found


def write_result(
    columns: Sequence[Column],
    rows: Iterable[Sequence[Any]],
    fmt: str,
    *,
    overflow: bool,
    query: str | None = None,
    infos: Sequence[tuple[str, str]] = (),
) -> bytes:
    """The document of a result table in a format of FORMATS (a key, or any name
    `resolve_format` takes). `overflow`: rows were left out (MAXREC). ValueError for a row
    whose length is not the number of columns, or a value its column's type cannot hold."""
    key = fmt if fmt in FORMATS else resolve_format(fmt)
    cells = _columns_of(columns, rows)
    if key in ("csv", "tsv"):
        return _delimited(columns, cells, key == "tsv")
    if key == "json":
        return _json(columns, cells, overflow)
    return _votable(columns, cells, key == "votable", overflow, query, infos)


def error_document(message: str, fmt: str = "votable") -> bytes:
    """A TAP error document (DALI: always a VOTable, whatever format was asked): pyvo
    raises DALQueryError with `message` as its text."""
    del fmt  # errors are VOTables in every format
    return (
        _head()
        + '<RESOURCE type="results"><INFO name="QUERY_STATUS" value="ERROR">'
        + _xml_text(message)
        + "</INFO></RESOURCE></VOTABLE>\n"
    ).encode()


# -- values ------------------------------------------------------------------------------

_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_STRINGS = frozenset({"char", "unicodeChar"})
_INTEGERS = {"short": ">h", "int": ">i", "long": ">q", "unsignedByte": ">B"}
_FLOATS = {"float": ">f", "double": ">d"}


def _columns_of(columns: Sequence[Column], rows: Iterable[Sequence[Any]]) -> list[list[Any]]:
    """The values column by column, each made the Python type of its column (None for
    nulls and NaN): every writer below works on whole columns, which is much faster."""
    table = rows if isinstance(rows, list) else list(rows)
    width = len(columns)
    if any(len(r) != width for r in table):
        bad = next(r for r in table if len(r) != width)
        raise ValueError(f"a row has {len(bad)} values for {width} columns")
    if not width:
        return []
    found = [list(c) for c in zip(*table, strict=True)] if table else [[] for _ in columns]
    return [_typed(c, values) for c, values in zip(columns, found, strict=True)]


def _typed(column: Column, values: list[Any]) -> list[Any]:
    datatype = column.datatype
    if datatype in _INTEGERS:
        return [v if type(v) is int or v is None else _integer(column, v) for v in values]
    if datatype in _FLOATS:
        return [
            None if v is None or v != v else (v if type(v) is float else _float(column, v))
            for v in values
        ]
    if datatype == "boolean":
        return [v if v is None or type(v) is bool else bool(v) for v in values]
    timestamps = column.xtype == "timestamp"
    return [
        v if type(v) is str and v.isascii() else (None if v is None else _text(v, timestamps))
        for v in values
    ]


def _integer(column: Column, value: Any) -> int | None:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"column {column.name}: {value!r} is not an integer") from None


def _float(column: Column, value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"column {column.name}: {value!r} is not a number") from None
    return None if number != number else number


def _text(value: Any, timestamps: bool) -> str:
    if isinstance(value, datetime):
        return timestamp(value) if timestamps else str(value)
    text = value if isinstance(value, str) else str(value)
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


def timestamp(value: datetime) -> str:
    """DALI's form of a naive UTC time: milliseconds, microseconds when they are there."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    spec = "milliseconds" if value.microsecond % 1000 == 0 else "microseconds"
    return value.isoformat(timespec=spec)


def _all_ascii(values: list[Any]) -> bool:
    return all(map(str.isascii, filter(None, values)))


def _string_type(column: Column, values: list[Any]) -> str:
    """The datatype a string column is written as: char only when all of it is ASCII
    (a column of an unknown datatype is written as a string column)."""
    if column.datatype != "unicodeChar" and _all_ascii(values):
        return "char"
    return "unicodeChar"


def _length(arraysize: str | None) -> tuple[int | None, bool]:
    """(the most characters, whether fewer may be written) of a string column's arraysize;
    (None, True) for "*", no arraysize, or one this writer does not know (written "*")."""
    if arraysize is None or not arraysize.rstrip("*").isdigit():
        return None, True
    return int(arraysize.rstrip("*")), arraysize.endswith("*")


# -- VOTable -------------------------------------------------------------------------------


def _head() -> str:
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<VOTABLE version="1.4" xmlns="{VOTABLE_NS}">'


def _xml_text(text: str) -> str:
    """Element content: escaped, CR kept as a reference (XML would make it LF), every
    character XML cannot hold replaced."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if text.isprintable():
        return text
    return _NOT_XML.sub("\ufffd", text).replace("\r", "&#13;")


def _attribute(text: str) -> str:
    """An attribute value, double-quoted: whitespace kept as references (XML would make
    tabs and line ends spaces)."""
    text = _xml_text(text).replace('"', "&quot;")
    if text.isprintable():
        return text
    return text.replace("\t", "&#9;").replace("\n", "&#10;")


def _field(column: Column, datatype: str) -> str:
    attributes = [("name", column.name), ("datatype", datatype)]
    if datatype in _STRINGS:
        attributes.append(("arraysize", _declared(column.arraysize)))
    for name in ("xtype", "unit", "ucd", "utype"):
        value = getattr(column, name)
        if value:
            attributes.append((name, value))
    text = " ".join(f'{k}="{_attribute(v)}"' for k, v in attributes)
    if column.description:
        return f"<FIELD {text}><DESCRIPTION>{_xml_text(column.description)}</DESCRIPTION></FIELD>"
    return f"<FIELD {text}/>"


def _declared(arraysize: str | None) -> str:
    """A string column's arraysize as written: "*" for none or one not understood."""
    if arraysize is not None and arraysize.rstrip("*").isdigit():
        return arraysize
    return "*"


def _datatype(column: Column, values: list[Any]) -> str:
    if column.datatype in _INTEGERS or column.datatype in _FLOATS or column.datatype == "boolean":
        return column.datatype
    return _string_type(column, values)


def _votable(
    columns: Sequence[Column],
    cells: list[list[Any]],
    binary: bool,
    overflow: bool,
    query: str | None,
    infos: Sequence[tuple[str, str]],
) -> bytes:
    datatypes = [_datatype(c, v) for c, v in zip(columns, cells, strict=True)]
    if not binary:  # U+FFFD in place of what XML cannot hold: then not ASCII
        cells = [
            _xml_cells(v) if t in _STRINGS else v for t, v in zip(datatypes, cells, strict=True)
        ]
        datatypes = [
            _datatype(c, v) if t == "char" else t
            for c, v, t in zip(columns, cells, datatypes, strict=True)
        ]
    status = [("QUERY_STATUS", "OK")]
    if query is not None:
        status.append(("QUERY", query))
    head = (
        _head()
        + '<RESOURCE type="results">'
        + "".join(
            f'<INFO name="{_attribute(n)}" value="{_attribute(v)}"/>' for n, v in [*status, *infos]
        )
        + "<TABLE>"
        + "".join(_field(c, t) for c, t in zip(columns, datatypes, strict=True))
    )
    tail = "</TABLE>"
    if overflow:
        tail += '<INFO name="QUERY_STATUS" value="OVERFLOW"/>'
    tail += "</RESOURCE></VOTABLE>\n"
    if binary:
        data = _binary2(columns, datatypes, cells)
        return b"".join(
            [
                (head + '<DATA><BINARY2><STREAM encoding="base64">').encode(),
                base64.b64encode(data),
                ("</STREAM></BINARY2></DATA>" + tail).encode(),
            ]
        )
    body = _tabledata(columns, datatypes, cells)
    return (head + "<DATA><TABLEDATA>" + body + "</TABLEDATA></DATA>" + tail).encode()


def _xml_cells(values: list[Any]) -> list[Any]:
    if "".join(filter(None, values)).isprintable():
        return values
    return [v if v is None or v.isprintable() else _NOT_XML.sub("\ufffd", v) for v in values]


# -- TABLEDATA ---------------------------------------------------------------------------


def _tabledata(columns: Sequence[Column], datatypes: list[str], cells: list[list[Any]]) -> str:
    if not columns:
        return ""
    tds = [_td_column(t, c.arraysize, v) for c, t, v in zip(columns, datatypes, cells, strict=True)]
    rows = zip(*tds, strict=True)
    return "".join("<TR>" + "".join(r) + "</TR>" for r in rows)


def _td_column(datatype: str, arraysize: str | None, values: list[Any]) -> list[str]:
    if datatype in _INTEGERS:
        return ["<TD/>" if v is None else f"<TD>{v}</TD>" for v in values]
    if datatype in _FLOATS:
        return ["<TD/>" if v is None else f"<TD>{_td_float(v)}</TD>" for v in values]
    if datatype == "boolean":
        return ["<TD/>" if v is None else ("<TD>T</TD>" if v else "<TD>F</TD>") for v in values]
    most, _ = _length(arraysize)
    if most is not None:
        values = [v if v is None else v[:most] for v in values]
    # Values are clean already (_xml_cells); most columns need no escaping at all.
    joined = "".join(filter(None, values))
    if not any(c in joined for c in "&<>\r"):
        return ["<TD/>" if v is None else f"<TD>{v}</TD>" for v in values]
    return [
        "<TD/>"
        if v is None
        else "<TD>"
        + v.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
        + "</TD>"
        for v in values
    ]


def _td_float(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


# -- BINARY2 -----------------------------------------------------------------------------

_LENGTH = struct.Struct(">i").pack
_BYTES = [bytes([i]) for i in range(256)]
_NONE = _LENGTH(0)  # a null string: no characters


def _binary2(columns: Sequence[Column], datatypes: list[str], cells: list[list[Any]]) -> bytes:
    """Per row: the null flags (one bit a column, the first the most significant), then
    each value big-endian (a string: its length, then its characters)."""
    count = len(cells[0]) if cells else 0
    flags = [0] * count
    width = (len(columns) + 7) // 8
    encoded: list[list[bytes]] = []
    for position, (column, datatype, values) in enumerate(
        zip(columns, datatypes, cells, strict=True)
    ):
        if None in values:
            bit = 1 << (width * 8 - 1 - position)
            for row in [i for i, v in enumerate(values) if v is None]:
                flags[row] |= bit
        encoded.append(_binary_column(column, datatype, values))
    masks = [_BYTES[f] for f in flags] if width == 1 else [f.to_bytes(width, "big") for f in flags]
    return b"".join(chain.from_iterable(zip(masks, *encoded, strict=True)))


def _binary_column(column: Column, datatype: str, values: list[Any]) -> list[bytes]:
    if datatype in _INTEGERS or datatype in _FLOATS:
        code = _INTEGERS.get(datatype) or _FLOATS[datatype]
        pack = struct.Struct(code).pack
        zero = pack(0)
        try:
            return [zero if v is None else pack(v) for v in values]
        except (struct.error, OverflowError):
            bad = next(v for v in values if v is not None and not _fits(pack, v))
            raise ValueError(f"column {column.name}: {bad!r} does not fit a {datatype}") from None
    if datatype == "boolean":
        return [b"?" if v is None else (b"T" if v else b"F") for v in values]
    most, variable = _length(column.arraysize)
    if most is None and datatype == "char":  # the usual case, written inline: fastest
        return [_NONE if v is None else _LENGTH(len(v)) + v.encode("ascii") for v in values]
    if most is None:
        return [
            _NONE if v is None else _LENGTH(len(b := v.encode("utf-16-be")) // 2) + b
            for v in values
        ]
    encode, size = (_ascii, 1) if datatype == "char" else (_utf16, 2)
    if variable:
        return [_NONE if v is None else _counted(_cut(encode(v), most, size), size) for v in values]
    blank = b"\0" * (most * size)
    return [
        blank if v is None else _cut(encode(v), most, size).ljust(most * size, b"\0")
        for v in values
    ]


def _ascii(text: str) -> bytes:
    return text.encode("ascii")


def _utf16(text: str) -> bytes:
    return text.encode("utf-16-be")


def _counted(data: bytes, size: int) -> bytes:
    return _LENGTH(len(data) // size) + data


def _cut(data: bytes, most: int, size: int) -> bytes:
    """At most `most` characters, never half of a UTF-16 surrogate pair."""
    if len(data) <= most * size:
        return data
    data = data[: most * size]
    if size == 2 and 0xD8 <= data[-2] <= 0xDB:
        data = data[:-2]
    return data


def _fits(pack: Callable[[Any], bytes], value: Any) -> bool:
    try:
        pack(value)
    except (struct.error, OverflowError):
        return False
    return True


# -- CSV, TSV, JSON ----------------------------------------------------------------------


def _plain(datatype: str, values: list[Any], tsv: bool) -> list[str]:
    """A column's values in CSV or TSV (before CSV's quoting), nulls empty; TSV's tabs,
    line ends and backslashes as backslash sequences (a TSV line is a row)."""
    if datatype in _INTEGERS:
        return ["" if v is None else str(v) for v in values]
    if datatype in _FLOATS:
        return ["" if v is None else (repr(v) if v - v == 0 else _infinity(v)) for v in values]
    if datatype == "boolean":
        return ["" if v is None else ("true" if v else "false") for v in values]
    texts = ["" if v is None else v for v in values]
    joined = "".join(texts)
    if not tsv or (joined.isprintable() and "\\" not in joined):
        return texts
    return [
        v.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
        for v in texts
    ]


def _infinity(value: float) -> str:
    return "Infinity" if value > 0 else "-Infinity"  # what Java, Python and pandas read


def _delimited(columns: Sequence[Column], cells: list[list[Any]], tsv: bool) -> bytes:
    """CSV (RFC 4180: CRLF, quoted when needed) or TSV: a header of the column names,
    then the rows, nulls empty."""
    names = [c.name for c in columns]
    texts = [_plain(c.datatype, v, tsv) for c, v in zip(columns, cells, strict=True)]
    rows = zip(*texts, strict=True) if texts else iter(())
    if tsv:
        header = _plain("char", names, tsv)
        lines = ["\t".join(r) + "\n" for r in chain([header], rows)]
        return "".join(lines).encode()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(names)
    writer.writerows(rows)
    return out.getvalue().encode()


def _json(columns: Sequence[Column], cells: list[list[Any]], overflow: bool) -> bytes:
    """JSON: the columns' metadata, the rows as arrays, and the query status (the one
    format besides VOTable that can tell an overflow)."""
    metadata = [
        {
            "name": c.name,
            "datatype": c.datatype,
            "arraysize": c.arraysize,
            "xtype": c.xtype,
            "unit": c.unit,
            "ucd": c.ucd,
            "utype": c.utype,
            "description": c.description,
        }
        for c in columns
    ]
    finite = [
        [None if v is not None and math.isinf(v) else v for v in values]
        if c.datatype in _FLOATS
        else values
        for c, values in zip(columns, cells, strict=True)
    ]
    data = [list(r) for r in zip(*finite, strict=True)] if finite else []
    document = {
        "metadata": metadata,
        "data": data,
        "query_status": "OVERFLOW" if overflow else "OK",
    }
    return orjson.dumps(document)

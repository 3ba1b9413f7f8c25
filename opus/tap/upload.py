"""TAP uploads (TAP 1.1 section 2.5): the UPLOAD parameter and the uploaded VOTables.

A table is the first TABLE of a VOTable in any serialization astropy reads inline:
TABLEDATA, BINARY, BINARY2. Before astropy sees the bytes, one pass of expat (in C, no
tree kept) checks that they are a VOTable and refuses what astropy would act on:
a STREAM href (astropy would fetch the URL or read the local file it names; FITS and
Parquet serializations are only ever read that way, so they are refused too) and entity
declarations (markup out of nothing). The same pass reads the first TABLE's FIELDs as
written, so that the columns keep their units and names exactly.

Values come back as Python values: int, float, bool, str, naive UTC datetime for
xtype="timestamp" columns, None for nulls. Empty strings are nulls, as an empty TD is
(astropy cannot tell the two apart in any serialization).
"""

from __future__ import annotations

import io
import math
import re
import warnings
from dataclasses import dataclass, field, replace
from typing import Any
from xml.parsers import expat

import numpy as np
from astropy.io.votable import parse  # type: ignore[import-untyped]
from astropy.io.votable.exceptions import W30, W46, W51  # type: ignore[import-untyped]

from opus.tap.results import Column
from opus.timeutil import parse_datetime

MAX_NAME = 64
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
# VOTable datatype -> the datatype of the table's Column (None: refused, with why)
_DATATYPES: dict[str, str | None] = {
    "boolean": "boolean",
    "bit": "boolean",
    "unsignedByte": "short",
    "short": "short",
    "int": "int",
    "long": "long",
    "float": "float",
    "double": "double",
    "char": "char",
    "unicodeChar": "unicodeChar",
    "floatComplex": None,
    "doubleComplex": None,
}
_STRINGS = ("char", "unicodeChar")
_TIMESTAMPS = ("timestamp", "adql:timestamp")  # DALI, and TAP 1.0's form
# Warnings of astropy that mean a value was read as something else than what is written.
_ALTERED = (W30, W46, W51)


class UploadError(ValueError):
    """What is wrong with an uploaded table; the message names the table."""


@dataclass(frozen=True)
class UploadTable:
    name: str  # as given in UPLOAD (a regular ADQL identifier)
    columns: list[Column]
    rows: list[tuple[Any, ...]]


def is_identifier(text: str) -> bool:
    """A regular ADQL identifier: ASCII letters, digits and _, from a letter, at most 64."""
    return len(text) <= MAX_NAME and _IDENTIFIER.fullmatch(text) is not None


def parse_upload_list(value: str) -> list[tuple[str, str]]:
    """The (table name, URI) pairs of an UPLOAD value: `name,URI` joined by `;`.

    A `;` inside an http(s) URL (`...;jsessionid=...`) stays part of it when what follows
    is not itself `name,URI`."""
    found: list[tuple[str, str]] = []
    for fragment in value.split(";"):
        if not fragment.strip():
            continue
        name, comma, uri = fragment.partition(",")
        pair = bool(comma) and is_identifier(name.strip()) and bool(uri.strip())
        if not pair and found and found[-1][1].lower().startswith(("http://", "https://")):
            found[-1] = (found[-1][0], f"{found[-1][1]};{fragment.strip()}")
            continue
        if not comma or not uri.strip():
            raise UploadError(f"{fragment.strip()!r} is not table_name,URI")
        if not is_identifier(name.strip()):
            raise UploadError(
                f"{name.strip()!r} (in {fragment.strip()!r}) is not a table name: letters, "
                f"digits and _, from a letter, at most {MAX_NAME}"
            )
        found.append((name.strip(), uri.strip()))
    return found


def read_upload(name: str, data: bytes, max_rows: int) -> UploadTable:
    """The first table of an uploaded VOTable, at most `max_rows` rows; UploadError for
    anything else (never an exception of the parser, nor a warning on stderr)."""
    if not is_identifier(name):
        raise UploadError(
            f"{name!r} is not a table name: letters, digits and _, from a letter, "
            f"at most {MAX_NAME}"
        )
    fields = _scan(name, data, max_rows)
    columns = [_column(name, f) for f in fields]
    seen: dict[str, str] = {}
    for column in columns:
        if column.name.lower() in seen:
            raise UploadError(
                f"table {name}: columns {seen[column.name.lower()]} and {column.name} "
                "have the same name (names are compared without regard to case)"
            )
        seen[column.name.lower()] = column.name
    table = _parse(name, data)
    if [f.name or f.ID for f in table.fields] != [c.name for c in columns]:
        raise UploadError(f"table {name}: its FIELDs could not be read (a TABLE ref?)")
    count = len(table.array)
    if count > max_rows:
        raise UploadError(f"table {name} has {count} rows, more than the {max_rows} allowed")
    columns = [
        replace(c, description=f.description or None)
        for c, f in zip(columns, table.fields, strict=True)
    ]
    values = [
        _values(name, c, table.array[key])
        for c, key in zip(columns, table.array.dtype.names, strict=True)
    ]
    rows = list(zip(*values, strict=True)) if values else []
    return UploadTable(name, columns, rows)


# -- the document ------------------------------------------------------------------------


def _scan(name: str, data: bytes, max_rows: int) -> list[dict[str, str]]:
    """The attributes of the first TABLE's FIELDs, read by expat; UploadError unless the
    bytes are a VOTable whose data are all inside it (and, for TABLEDATA, too many rows
    are refused here, before astropy reads them)."""
    scan = _Scan(name, max_rows)
    parser = expat.ParserCreate()
    parser.StartElementHandler = scan.start
    parser.EntityDeclHandler = scan.entity
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise UploadError(f"table {name}: not a VOTable, not even XML ({exc})") from None
    if not scan.tables:
        raise UploadError(f"table {name}: the VOTable has no TABLE")
    if not scan.fields:
        raise UploadError(f"table {name}: its TABLE has no FIELD (no column)")
    return scan.fields


@dataclass
class _Scan:
    name: str
    max_rows: int
    root: bool = False
    tables: int = 0
    rows: int = 0
    collecting: bool = False  # inside the first TABLE, before its DATA
    fields: list[dict[str, str]] = field(default_factory=list)

    def start(self, tag: str, attributes: dict[str, str]) -> None:
        local = tag.rpartition(":")[2]  # no namespace processing: a prefix may be there
        if local == "TD" and self.root:  # most of a TABLEDATA: nothing to see
            return
        if not self.root and local != "VOTABLE":
            raise UploadError(f"table {self.name}: not a VOTable (the document is <{tag}>)")
        self.root = True
        if local == "TR" and self.tables == 1:
            self.rows += 1
            if self.rows > self.max_rows:
                raise UploadError(
                    f"table {self.name} has more than the {self.max_rows} rows allowed"
                )
        elif local == "STREAM" and "href" in attributes:
            raise UploadError(
                f"table {self.name}: its data are at a link ({attributes['href'][:200]!r}), "
                "which is not followed: put them in the VOTable (TABLEDATA, BINARY or BINARY2)"
            )
        elif local in ("FITS", "PARQUET"):
            raise UploadError(
                f"table {self.name}: the {local} serialization is not read: send TABLEDATA, "
                "BINARY or BINARY2"
            )
        elif local == "TABLE":
            self.tables += 1
            self.collecting = self.tables == 1
        elif local == "DATA":
            self.collecting = False
        elif local == "FIELD" and self.collecting:
            self.fields.append(attributes)

    def entity(self, entity: str, *_: Any) -> None:
        raise UploadError(f"table {self.name}: the document declares an entity ({entity})")


def _column(table: str, attributes: dict[str, str]) -> Column:
    """A FIELD as a Column of the types TAP works with; UploadError for what it cannot
    hold (complex numbers, arrays)."""
    name = attributes.get("name") or attributes.get("ID") or ""
    if not name:
        raise UploadError(f"table {table}: a FIELD has no name")
    if not is_identifier(name):
        raise UploadError(
            f"table {table}: the column name {name!r} is not a regular ADQL identifier "
            f"(letters, digits and _, from a letter, at most {MAX_NAME})"
        )
    given = attributes.get("datatype", "")
    if given not in _DATATYPES:
        known = ", ".join(_DATATYPES)
        raise UploadError(
            f"table {table}: column {name} has datatype {given!r}, not one of {known}"
        )
    datatype = _DATATYPES[given]
    if datatype is None:
        raise UploadError(
            f"table {table}: column {name} is {given}: complex numbers are not supported"
        )
    arraysize = attributes.get("arraysize")
    strings = datatype in _STRINGS
    if (strings and arraysize and "x" in arraysize) or (
        not strings and arraysize not in (None, "1")
    ):
        raise UploadError(
            f"table {table}: column {name} is an array (arraysize={arraysize!r}): only "
            "single values and strings can be uploaded"
        )
    xtype = attributes.get("xtype") or None
    if xtype and xtype.lower() in _TIMESTAMPS:
        xtype = "timestamp" if strings else None
    return Column(
        name,
        datatype,
        arraysize="*" if strings else None,
        xtype=xtype,
        unit=attributes.get("unit") or None,
        ucd=attributes.get("ucd") or None,
        utype=attributes.get("utype") or None,
    )


def _parse(name: str, data: bytes) -> Any:
    """The first TABLE, read by astropy; its warnings kept from stderr, those that mean a
    value was changed on reading made UploadError."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            votable = parse(io.BytesIO(data), verify="warn", table_number=0)
            table = votable.get_first_table()
        except Exception as exc:  # astropy raises many kinds on broken files
            raise UploadError(
                f"table {name}: the VOTable cannot be read ({_reason(exc)})"
            ) from None
    for warning in caught:
        if isinstance(warning.message, _ALTERED):
            raise UploadError(f"table {name}: {_reason(warning.message)}")
    return table


def _reason(exc: BaseException) -> str:
    """astropy's message without its `None:1:163: ` position prefix (the file has no name)."""
    text = str(exc)
    return re.sub(r"^(None|\?|\d+):[\d?]+:[\d?]+: ", "", text, count=1)[:500]


# -- the values --------------------------------------------------------------------------


def _values(table: str, column: Column, array: Any) -> list[Any]:
    """A column's values as Python values, None for nulls."""
    if array.ndim > 1:  # arraysize="1": an array of one value each
        array = array.reshape(len(array))
    values: list[Any] = array.data.tolist()
    nulls: list[bool] = np.ma.getmaskarray(array).tolist()
    if column.datatype in _STRINGS:
        texts = [None if n or not v else str(v) for v, n in zip(values, nulls, strict=True)]
        if column.xtype == "timestamp":
            return [_timestamp(table, column, i, v) for i, v in enumerate(texts)]
        return texts
    if column.datatype in ("float", "double"):
        return [
            None if n or math.isnan(v) else float(v) for v, n in zip(values, nulls, strict=True)
        ]
    if column.datatype == "boolean":
        return [None if n else bool(v) for v, n in zip(values, nulls, strict=True)]
    return [None if n else int(v) for v, n in zip(values, nulls, strict=True)]


def _timestamp(table: str, column: Column, row: int, text: str | None) -> Any:
    if text is None:
        return None
    try:
        return parse_datetime(text)
    except ValueError:
        raise UploadError(
            f"table {table}: column {column.name}, row {row + 1}: {text[:100]!r} is not an "
            "ISO 8601 timestamp (YYYY-MM-DDThh:mm:ss[.sss][Z])"
        ) from None

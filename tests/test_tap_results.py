"""TAP result documents and uploaded tables (fast: no server).

Results are read back by the readers clients use (astropy, pyvo, csv, json) and linted
by `stilts votlint`; uploads are VOTables astropy writes, in every serialization."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import subprocess
import time
import warnings
from datetime import datetime
from typing import Any

import numpy as np
import pytest
from astropy.io.votable import parse
from astropy.io.votable.tree import Field, Resource, TableElement, VOTableFile
from lxml import etree

from opus.tap.results import FORMATS, Column, error_document, resolve_format, write_result
from opus.tap.upload import UploadError, UploadTable, parse_upload_list, read_upload
from tests.servers import have

pyvo = pytest.importorskip("pyvo")

VOT = "{http://www.ivoa.net/xml/VOTable/v1.3}"
WHEN = datetime(2026, 1, 31, 12, 30, 15, 250000)

COLUMNS = [
    Column("s", "short", unit="s", ucd="meta.number"),
    Column("i", "int"),
    Column("l", "long", description='a long & <its> "description"'),
    Column("f", "float"),
    Column("d", "double", unit="deg"),
    Column("b", "boolean"),
    Column("c", "char", "*", ucd="meta.id", utype="prov:Entity.id"),
    Column("u", "unicodeChar", "*"),
    Column("t", "char", "*", xtype="timestamp", ucd="time.epoch"),
    Column("x", "char", "*", description="text that is not ASCII here"),
]
ROWS: list[tuple[Any, ...]] = [
    (1, 2, 3, 1.5, 2.25, True, "a<b & c>d", "ascii", WHEN, "plain"),
    (None, None, None, None, None, None, None, None, None, None),
    (
        -32768,
        2**31 - 1,
        2**63 - 1,
        -0.5,
        math.nan,
        False,
        "x",
        "h\u00e9llo \u65e5\u672c \U0001f600",
        datetime(2026, 2, 1),
        "\u00e9t\u00e9",
    ),
]
QUERY = "SELECT *\nFROM tap_upload.mine WHERE a < 'b' AND c & 1 = 1"


def table_of(document: bytes) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning of astropy is a defect of the document
        return parse(io.BytesIO(document)).get_first_table()


def rows_of(document: bytes) -> list[list[Any]]:
    """The rows astropy reads, masked values as None."""
    table = table_of(document)
    found = []
    for record, mask in zip(table.array.data.tolist(), table.array.mask.tolist(), strict=True):
        found.append([None if m else v for v, m in zip(record, mask, strict=True)])
    return found


# -- formats ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "key"),
    [
        (None, "votable"),
        ("", "votable"),
        ("votable", "votable"),
        ("VOTable", "votable"),
        ("application/x-votable+xml", "votable"),
        ("text/xml", "votable"),
        ("votable/b2", "votable"),
        ("application/x-votable+xml;serialization=binary2", "votable"),
        ("application/x-votable+xml; Serialization = BINARY2", "votable"),
        ("votable/td", "votable/td"),
        ("application/x-votable+xml;serialization=TABLEDATA", "votable/td"),
        ("text/xml;serialization=tabledata", "votable/td"),
        ("csv", "csv"),
        ("text/csv", "csv"),
        ("text/csv;header=present", "csv"),
        ("tsv", "tsv"),
        ("text/tab-separated-values", "tsv"),
        ("json", "json"),
        ("application/json", "json"),
    ],
)
def test_every_format_name_of_tap_and_dali_is_taken(given: str | None, key: str) -> None:
    assert resolve_format(given) == key
    assert key in FORMATS


@pytest.mark.parametrize(
    "given",
    ["fits", "votable/b", "application/x-votable+xml;serialization=binary", "text/html", "xml"],
)
def test_an_unknown_format_is_refused_naming_it_and_the_choices(given: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(given))) as caught:
        resolve_format(given)
    for name in ("votable", "votable/td", "csv", "tsv", "json"):
        assert name in str(caught.value)


def test_the_content_types() -> None:
    assert FORMATS["votable"].startswith("application/x-votable+xml")
    assert FORMATS["votable/td"].startswith("application/x-votable+xml")
    assert FORMATS["csv"].startswith("text/csv")
    assert FORMATS["tsv"] == "text/tab-separated-values"
    assert FORMATS["json"] == "application/json"


# -- VOTable -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["votable", "votable/td"])
def test_votables_read_back_by_astropy_with_every_datatype(fmt: str) -> None:
    document = write_result(COLUMNS, ROWS, fmt, overflow=False, query=QUERY)
    table = table_of(document)
    serialization = "BINARY2" if fmt == "votable" else "TABLEDATA"
    assert etree.fromstring(document).find(f".//{VOT}DATA/{VOT}{serialization}") is not None
    fields = {f.name: f for f in table.fields}
    assert [f.name for f in table.fields] == [c.name for c in COLUMNS]
    assert [f.datatype for f in table.fields] == [
        *("short", "int", "long", "float", "double", "boolean", "char", "unicodeChar", "char"),
        "unicodeChar",  # char with values that are not ASCII: written as what they are
    ]
    assert fields["t"].xtype == "timestamp" and fields["t"].ucd == "time.epoch"
    assert fields["c"].utype == "prov:Entity.id" and fields["c"].arraysize == "*"
    assert str(fields["d"].unit) == "deg"
    assert fields["l"].description == 'a long & <its> "description"'
    first, nulls, last = rows_of(document)
    assert first == [
        1,
        2,
        3,
        1.5,
        2.25,
        True,
        "a<b & c>d",
        "ascii",
        "2026-01-31T12:30:15.250",
        "plain",
    ]
    assert nulls[:6] == [None] * 6  # numbers and booleans: masked
    assert all(v in (None, "") for v in nulls[6:])  # astropy reads null strings as ""
    assert last[:3] == [-32768, 2**31 - 1, 2**63 - 1]
    assert last[3] == -0.5 and last[4] is None and last[5] is False  # NaN is a null
    assert last[6:] == [
        "x",
        "h\u00e9llo \u65e5\u672c \U0001f600",
        "2026-02-01T00:00:00.000",
        "\u00e9t\u00e9",
    ]


@pytest.mark.parametrize("fmt", ["votable", "votable/td"])
def test_the_status_infos_the_query_and_the_overflow_after_the_table(fmt: str) -> None:
    infos = [("serverVersion", "1.0"), ("note", 'a "quoted" <note>')]
    document = write_result(COLUMNS, ROWS, fmt, overflow=True, query=QUERY, infos=infos)
    resource = etree.fromstring(document).find(f"{VOT}RESOURCE")
    assert resource is not None and resource.get("type") == "results"
    children = [(e.tag.removeprefix(VOT), e.get("name"), e.get("value")) for e in resource]
    assert children == [
        ("INFO", "QUERY_STATUS", "OK"),
        ("INFO", "QUERY", QUERY),
        ("INFO", "serverVersion", "1.0"),
        ("INFO", "note", 'a "quoted" <note>'),
        ("TABLE", None, None),
        ("INFO", "QUERY_STATUS", "OVERFLOW"),
    ]
    with pytest.warns(pyvo.dal.DALOverflowWarning):
        results = pyvo.dal.DALResults(parse(io.BytesIO(document)))
    assert results.status[0] == "OVERFLOW" and len(results) == len(ROWS)
    quiet = write_result(COLUMNS, ROWS, fmt, overflow=False)
    statuses = [
        i.get("value")
        for i in etree.fromstring(quiet).iter(f"{VOT}INFO")
        if i.get("name") == "QUERY_STATUS"
    ]
    assert statuses == ["OK"]
    assert pyvo.dal.DALResults(parse(io.BytesIO(quiet))).status[0] == "OK"


@pytest.mark.parametrize("fmt", ["votable", "votable/td"])
def test_characters_xml_cannot_hold_do_not_break_the_document(fmt: str) -> None:
    columns = [Column("text", "char", "*", description="bell \x07 here"), Column("n", "int")]
    rows = [("a\x00b\x07c\x1bd", 1), ("tab\there\r\nline", 2), ("\ud800 lone", 3), ("\ufffe", 4)]
    document = write_result(columns, rows, fmt, overflow=False, query="SELECT '\x01'")
    etree.fromstring(document)  # well-formed
    values = [r[0] for r in rows_of(document)]
    assert values[1] == "tab\there\r\nline"  # whitespace kept exactly
    assert values[2] == "\ufffd lone"
    if fmt == "votable/td":
        assert values[0] == "a\ufffdb\ufffdc\ufffdd" and values[3] == "\ufffd"
    else:  # BINARY2 carries control characters as they are
        assert values[0] == "a\x00b\x07c\x1bd"
    assert table_of(document).fields[0].description == "bell \ufffd here"


def test_strings_of_fixed_and_bounded_length() -> None:
    columns = [
        Column("fixed", "char", "4"),
        Column("bounded", "char", "3*"),
        Column("wide", "unicodeChar", "2"),
    ]
    rows = [("abcdefg", "abcdef", "\u00e9\u00e8\u00ea"), ("ab", "a", "\u00e9"), (None, None, None)]
    for fmt in ("votable", "votable/td"):
        found = rows_of(write_result(columns, rows, fmt, overflow=False))
        assert found[:2] == [["abcd", "abc", "\u00e9\u00e8"], ["ab", "a", "\u00e9"]], fmt


def test_an_empty_result_and_many_columns() -> None:
    columns = [Column(f"c{i}", "int") for i in range(19)]  # 3 bytes of null flags
    rows = [tuple(None if j % (i + 2) == 0 else i * j for j in range(19)) for i in range(5)]
    for fmt in ("votable", "votable/td"):
        assert rows_of(write_result(columns, rows, fmt, overflow=False)) == [list(r) for r in rows]
        assert rows_of(write_result(columns, [], fmt, overflow=False)) == []


def test_values_are_made_their_columns_types() -> None:
    columns = [
        Column("n", "long"),
        Column("x", "double"),
        Column("b", "boolean"),
        Column("s", "char", "*"),
    ]
    rows = [(np.int64(3), np.float32(0.5), 1, 42), (2.0, 7, 0, datetime(2020, 1, 1))]
    assert rows_of(write_result(columns, rows, "votable", overflow=False)) == [
        [3, 0.5, True, "42"],
        [2, 7.0, False, "2020-01-01 00:00:00"],
    ]


def test_bad_rows_are_a_value_error_naming_the_column() -> None:
    with pytest.raises(ValueError, match="2 values for 3 columns"):
        write_result(COLUMNS[:3], [(1, 2)], "votable", overflow=False)
    with pytest.raises(ValueError, match="column s"):
        write_result([Column("s", "short")], [(70000,)], "votable", overflow=False)
    with pytest.raises(ValueError, match="column n"):
        write_result([Column("n", "int")], [("many",)], "csv", overflow=False)


def test_writing_is_fast() -> None:
    columns = [
        Column(f"c{i}", t, "*" if t == "char" else None)
        for i, t in enumerate(["char", "long", "double", "boolean", "int"] * 2)
    ]
    rows = [(f"id{r}", r, r / 3, r % 2 == 0, r) * 2 for r in range(100)]
    for fmt in ("votable", "votable/td"):
        best = min(
            _timed(lambda f=fmt: write_result(columns, rows, f, overflow=False)) for _ in range(20)
        )
        assert best < 0.01, (fmt, best)  # about 0.5 ms on a laptop


def _timed(action: Any) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def test_stilts_votlint_finds_nothing_to_say() -> None:
    stilts = have("stilts")
    documents = {
        "binary2": write_result(
            COLUMNS, ROWS, "votable", overflow=True, query=QUERY, infos=[("a", "b")]
        ),
        "tabledata": write_result(COLUMNS, ROWS, "votable/td", overflow=False, query=QUERY),
        "empty": write_result(COLUMNS, [], "votable/td", overflow=False),
        "error": error_document("no table <nothing> & that is \x01 that"),
    }
    running = {
        name: subprocess.Popen(
            [stilts, "votlint", "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for name in documents
    }
    for name, process in running.items():
        output, _ = process.communicate(documents[name], timeout=60)
        said = [
            line
            for line in output.decode().splitlines()
            if re.match(r"(ERROR|WARNING|FATAL)\b|[EWF]-", line)
        ]
        assert said == [], (name, output.decode())


# -- CSV, TSV, JSON ------------------------------------------------------------------------


def test_csv_read_back_by_the_csv_module() -> None:
    columns = [*COLUMNS, Column("odd", "char", "*")]
    rows = [(*r, 'comma, "quote"\nline') for r in ROWS]
    document = write_result(columns, rows, "csv", overflow=True)
    assert b"\r\n" in document
    read = list(csv.reader(io.StringIO(document.decode(), newline="")))
    assert read[0] == [c.name for c in columns]
    assert read[1] == [
        "1",
        "2",
        "3",
        "1.5",
        "2.25",
        "true",
        "a<b & c>d",
        "ascii",
        "2026-01-31T12:30:15.250",
        "plain",
        'comma, "quote"\nline',
    ]
    assert read[2][:10] == [""] * 10
    assert read[3][4] == "" and read[3][5] == "false" and read[3][8] == "2026-02-01T00:00:00.000"
    assert len(read) == 4


def test_tsv_escapes_tabs_and_line_ends() -> None:
    columns = [Column("a", "char", "*"), Column("n", "double")]
    rows = [("tab\there\nnew \\ back", math.inf), (None, None)]
    lines = write_result(columns, rows, "tsv", overflow=False).decode().split("\n")
    assert lines == ["a\tn", "tab\\there\\nnew \\\\ back\tInfinity", "\t", ""]


def test_json_has_the_metadata_the_rows_and_the_status() -> None:
    document = json.loads(write_result(COLUMNS, ROWS, "json", overflow=True))
    assert document["query_status"] == "OVERFLOW"
    assert document["metadata"][8] == {
        "name": "t",
        "datatype": "char",
        "arraysize": "*",
        "xtype": "timestamp",
        "unit": None,
        "ucd": "time.epoch",
        "utype": None,
        "description": None,
    }
    assert document["data"][0] == [
        1,
        2,
        3,
        1.5,
        2.25,
        True,
        "a<b & c>d",
        "ascii",
        "2026-01-31T12:30:15.250",
        "plain",
    ]
    assert document["data"][1] == [None] * 10
    assert document["data"][2][4] is None  # NaN
    assert json.loads(write_result(COLUMNS, [], "json", overflow=False))["query_status"] == "OK"


# -- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["votable", "csv", "json"])
def test_the_error_document_makes_pyvo_raise_with_the_message(fmt: str) -> None:
    message = "no table provenance.nothing: the tables are <these> & those"
    document = error_document(message, fmt)
    assert document.startswith(b"<?xml")
    with pytest.raises(pyvo.dal.DALQueryError) as caught:
        pyvo.dal.DALResults(parse(io.BytesIO(document)))
    assert str(caught.value) == message
    info = etree.fromstring(document).find(f"{VOT}RESOURCE/{VOT}INFO")
    assert info is not None and info.get("value") == "ERROR" and info.text == message


# -- uploads -------------------------------------------------------------------------------


def astropy_votable(serialization: str, rows: int = 3) -> bytes:
    """A VOTable astropy writes (as pyvo uploads them) with every scalar type."""
    votable = VOTableFile()
    resource = Resource()
    votable.resources.append(resource)
    table = TableElement(votable)
    resource.tables.append(table)
    table.fields.extend(
        [
            Field(votable, name="file", datatype="char", arraysize="*", ucd="meta.id"),
            Field(votable, name="made", datatype="char", arraysize="*", xtype="timestamp"),
            Field(votable, name="n", datatype="int"),
            Field(votable, name="small", datatype="unsignedByte"),
            Field(votable, name="big", datatype="long"),
            Field(votable, name="x", datatype="double", unit="deg"),
            Field(votable, name="ok", datatype="boolean"),
            Field(votable, name="flag", datatype="bit"),
            Field(votable, name="label", datatype="unicodeChar", arraysize="*"),
        ]
    )
    table.fields[2].values.null = -1  # BINARY needs null values for integers
    table.create_arrays(rows)
    base = [
        ("opus:ent_a", "2026-01-31T12:00:00Z", 1, 7, 2**40, 1.5, True, True, "h\u00e9llo"),
        ("opus:ent_b", "2026-01-31", 2, 255, -3, math.nan, False, False, "\u65e5\u672c"),
        ("opus:ent_c", "2026-01-31T12:00:00.125+01:00", 3, 0, 0, -2.0, True, True, "plain"),
    ]
    for i in range(rows):
        table.array[i] = base[i % 3]
    table.array.mask[1]["n"] = True
    table.array.mask[2]["ok"] = True
    table.format = serialization
    out = io.BytesIO()
    votable.to_xml(out)
    return out.getvalue()


@pytest.mark.parametrize("serialization", ["tabledata", "binary", "binary2"])
def test_uploads_in_every_serialization(
    serialization: str, capfd: pytest.CaptureFixture[str]
) -> None:
    table = read_upload("mine", astropy_votable(serialization), 10)
    assert isinstance(table, UploadTable) and table.name == "mine"
    assert [(c.name, c.datatype, c.arraysize, c.xtype) for c in table.columns] == [
        ("file", "char", "*", None),
        ("made", "char", "*", "timestamp"),
        ("n", "int", None, None),
        ("small", "short", None, None),
        ("big", "long", None, None),
        ("x", "double", None, None),
        ("ok", "boolean", None, None),
        ("flag", "boolean", None, None),
        ("label", "unicodeChar", "*", None),
    ]
    assert table.columns[0].ucd == "meta.id" and table.columns[5].unit == "deg"
    assert table.rows == [
        ("opus:ent_a", datetime(2026, 1, 31, 12), 1, 7, 2**40, 1.5, True, True, "h\u00e9llo"),
        ("opus:ent_b", datetime(2026, 1, 31), None, 255, -3, None, False, False, "\u65e5\u672c"),
        ("opus:ent_c", datetime(2026, 1, 31, 11, 0, 0, 125000), 3, 0, 0, -2.0, None, True, "plain"),
    ]
    assert capfd.readouterr() == ("", "")


def test_an_upload_of_our_own_result_reads_back() -> None:
    columns = [c for c in COLUMNS if c.name != "f"]  # float32 does not keep every double
    rows = [tuple(v for v, c in zip(r, COLUMNS, strict=True) if c.name != "f") for r in ROWS]
    for fmt in ("votable", "votable/td"):
        table = read_upload("again", write_result(columns, rows, fmt, overflow=True), 10)
        assert [c.name for c in table.columns] == [c.name for c in columns]
        assert table.rows[0] == rows[0]
        assert table.rows[1] == (None,) * len(columns)
        assert table.rows[2] == (*rows[2][:3], None, *rows[2][4:])  # NaN: a null


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"", "not even XML"),
        (b"name,file\nx,y\n", "not even XML"),
        (b"<html><body>no</body></html>", "not a VOTable (the document is <html>)"),
        (b'<VOTABLE version="1.4"><RESOURCE/></VOTABLE>', "no TABLE"),
        (b'<VOTABLE version="1.4"><RESOURCE><TABLE/></RESOURCE></VOTABLE>', "no FIELD"),
    ],
)
def test_what_is_not_a_votable_is_refused(data: bytes, says: str) -> None:
    with pytest.raises(UploadError, match=re.escape(says)) as caught:
        read_upload("mine", data, 10)
    assert "table mine" in str(caught.value)


def test_too_many_rows_are_refused() -> None:
    for serialization in ("tabledata", "binary2"):
        data = astropy_votable(serialization, rows=6)
        assert len(read_upload("mine", data, 6).rows) == 6
        with pytest.raises(UploadError, match=r"table mine has .*more than the 5"):
            read_upload("mine", data, 5)


HEAD = '<?xml version="1.0"?><VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3"><RESOURCE><TABLE>'


def votable(fields: str, data: str = "") -> bytes:
    return f"{HEAD}{fields}<DATA>{data}</DATA></TABLE></RESOURCE></VOTABLE>".encode()


def td(*rows: str) -> str:
    return "<TABLEDATA>" + "".join(f"<TR>{r}</TR>" for r in rows) + "</TABLEDATA>"


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (
            votable('<FIELD name="a" datatype="int" arraysize="2"/>', td("<TD>1 2</TD>")),
            "column a is an array",
        ),
        (
            votable('<FIELD name="a" datatype="double" arraysize="*"/>', td("<TD>1 2</TD>")),
            "column a is an array",
        ),
        (
            votable('<FIELD name="a" datatype="char" arraysize="3x2"/>', td("<TD>abcdef</TD>")),
            "column a is an array",
        ),
        (
            votable('<FIELD name="z" datatype="doubleComplex"/>', td("<TD>1 2</TD>")),
            "complex numbers",
        ),
        (
            votable('<FIELD name="RA (deg)" datatype="double"/>', td("<TD>1</TD>")),
            "'RA (deg)' is not a regular",
        ),
        (
            votable('<FIELD name="_a" datatype="double"/>', td("<TD>1</TD>")),
            "'_a' is not a regular",
        ),
        (votable('<FIELD datatype="double"/>', td("<TD>1</TD>")), "a FIELD has no name"),
        (
            votable(
                '<FIELD name="a" datatype="int"/><FIELD name="A" datatype="int"/>',
                td("<TD>1</TD><TD>2</TD>"),
            ),
            "columns a and A",
        ),
        (votable('<FIELD name="a" datatype="integer"/>', td("<TD>1</TD>")), "datatype 'integer'"),
        (votable('<FIELD name="a" datatype="int"/>', td("<TD>one</TD>")), "'one'"),
        (votable('<FIELD name="a" datatype="short"/>', td("<TD>100000</TD>")), "out of range"),
        (votable('<FIELD name="a" datatype="double"/>', td("<TD>abc</TD>")), "'abc'"),
        (
            votable('<FIELD name="a" datatype="char" arraysize="2"/>', td("<TD>abc</TD>")),
            "too long",
        ),
        (votable('<FIELD name="a" datatype="boolean"/>', td("<TD>yes</TD>")), "'yes'"),
        (votable('<FIELD name="a" datatype="int"/>', td("<TD>1</TD><TD>2</TD>")), "more columns"),
        (
            votable(
                '<FIELD name="t" datatype="char" arraysize="*" xtype="timestamp"/>',
                td("<TD>2026-01-01</TD>", "<TD>soon</TD>"),
            ),
            "column t, row 2: 'soon' is not an ISO 8601 timestamp",
        ),
        (
            votable(
                '<FIELD name="a" datatype="int"/>',
                '<BINARY2><STREAM href="file:///etc/passwd"/></BINARY2>',
            ),
            "'file:///etc/passwd'",
        ),
        (
            votable(
                '<FIELD name="a" datatype="int"/>',
                '<BINARY><STREAM href="http://169.254.169.254/"/></BINARY>',
            ),
            "not followed",
        ),
        (
            votable(
                '<FIELD name="a" datatype="int"/>',
                '<FITS extnum="1"><STREAM encoding="base64">AAAA</STREAM></FITS>',
            ),
            "FITS",
        ),
        (
            b'<?xml version="1.0"?><!DOCTYPE VOTABLE [<!ENTITY e "&#60;STREAM '
            b"href='file:///etc/passwd'/&#62;\">]><VOTABLE><RESOURCE><TABLE>"
            b'<FIELD name="a" datatype="int"/><DATA><BINARY>&e;</BINARY></DATA>'
            b"</TABLE></RESOURCE></VOTABLE>",
            "declares an entity",
        ),
    ],
)
def test_refused_uploads_say_why(data: bytes, says: str, capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UploadError, match=re.escape(says)) as caught:
        read_upload("mine", data, 10)
    assert "table mine" in str(caught.value) and "\n" not in str(caught.value)
    assert capfd.readouterr() == ("", "")


def test_a_link_in_utf16_is_found_too() -> None:
    data = votable(
        '<FIELD name="a" datatype="int"/>', '<BINARY2><STREAM href="http://x/"/></BINARY2>'
    )
    text = data.decode().replace('version="1.0"?>', 'version="1.0" encoding="UTF-16"?>')
    with pytest.raises(UploadError, match="not followed"):
        read_upload("mine", text.encode("utf-16"), 10)


def test_only_the_first_table_is_read() -> None:
    data = (
        f'{HEAD}<FIELD name="a" datatype="int"/><DATA>{td("<TD>1</TD>")}</DATA></TABLE>'
        f'<TABLE><FIELD name="b" datatype="char" arraysize="*"/>'
        f"<DATA>{td('<TD>x</TD>', '<TD>y</TD>')}</DATA></TABLE>"
        "</RESOURCE></VOTABLE>"
    ).encode()
    table = read_upload("first", data, 1)
    assert [c.name for c in table.columns] == ["a"] and table.rows == [(1,)]


def test_details_of_values() -> None:
    data = votable(
        '<FIELD name="e" datatype="char" arraysize="*"/>'
        '<FIELD name="v" datatype="float" unit="erg.s-1">'
        '<DESCRIPTION>speed</DESCRIPTION></FIELD><FIELD name="one" datatype="int" arraysize="1"/>'
        '<FIELD name="when" datatype="char" arraysize="*" xtype="adql:TIMESTAMP"/>',
        td(
            "<TD></TD><TD>NaN</TD><TD>4</TD><TD/>",
            "<TD>x</TD><TD>-Inf</TD><TD>5</TD><TD>2026-01-01T00:00:00</TD>",
        ),
    )
    table = read_upload("mine", data, 10)
    assert table.columns[1].description == "speed" and table.columns[1].unit == "erg.s-1"
    assert table.columns[3].xtype == "timestamp"
    assert table.rows == [(None, None, 4, None), ("x", -math.inf, 5, datetime(2026, 1, 1))]


@pytest.mark.parametrize(
    "name", ["1a", "a b", "tap_upload.x", "", "a" * 65, "\u00e9t\u00e9", "a-b"]
)
def test_a_bad_table_name_is_refused(name: str) -> None:
    with pytest.raises(UploadError, match="is not a table name"):
        read_upload(name, astropy_votable("tabledata"), 10)
    with pytest.raises(UploadError, match="is not a table name"):
        parse_upload_list(f"{name},param:x")


def test_the_upload_list() -> None:
    assert parse_upload_list("a,param:f1;b,http://x/y.xml") == [
        ("a", "param:f1"),
        ("b", "http://x/y.xml"),
    ]
    assert parse_upload_list(" a , param:f1 ; ") == [("a", "param:f1")]
    assert parse_upload_list("a,https://x/y;jsessionid=1;b,param:t") == [
        ("a", "https://x/y;jsessionid=1"),
        ("b", "param:t"),
    ]
    assert parse_upload_list("a" * 64 + ",param:x") == [("a" * 64, "param:x")]


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("a", "'a'"), ("a,", "'a,'"), ("a,param:x;junk", "'junk'"), (",param:x", "',param:x'")],
)
def test_a_bad_upload_list_names_the_fragment(value: str, fragment: str) -> None:
    with pytest.raises(UploadError, match=re.escape(fragment)):
        parse_upload_list(value)

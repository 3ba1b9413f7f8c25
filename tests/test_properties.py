"""Property tests (hypothesis) of what hostile input reaches first: parameter checking and
typing, the text rules of XML documents, file names and headers, and definition loading.

Bounded: every test runs under PROFILE (a few seconds in all). OPUS_HYPOTHESIS_PROFILE=thorough
runs many more examples.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from lxml import etree

from opus.errors import ParameterError
from opus.http import content_disposition, one_line
from opus.jobdefs.model import (
    NAME_PATTERN,
    RESERVED_ENV,
    RESERVED_ENV_PREFIXES,
    Kind,
    ParameterDef,
)
from opus.jobdefs.params import check_definition, check_text, check_value, python_value, xml_safe
from opus.jobdefs.votable import KINDS, JobDefError, load_votable
from opus.store.files import safe_file_name
from tests.servers import ROOT, TEST_JOBDEFS

settings.register_profile(
    "fast", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("thorough", max_examples=2000, deadline=None)
PROFILE = settings.get_profile(os.environ.get("OPUS_HYPOTHESIS_PROFILE", "fast"))

VOTABLE_NS = "http://www.ivoa.net/xml/VOTable/v1.3"
KIND_NAMES: list[Kind] = ["string", "integer", "real", "boolean", "datetime"]
# Characters XML 1.0 cannot hold, and others that break naive code
NASTY = [
    "\x00", "\x01", "\x08", "\x0b", "\x0c", "\x1b", "\x7f", "\x85", "\ud800", "\udcff",
    "\ufffe", "\uffff", "\u2028", "\r", "\n", "\t", '"', "'", "<", ">", "&", "]]>", "\\",
    "/", "..", ";", "$(", "`", "%00", "%2f", "é", "名", "\U0001f600", "-", " ",
]  # fmt: skip

# -- strategies ------------------------------------------------------------------------------

nasty_text = st.lists(st.one_of(st.sampled_from(NASTY), st.text(max_size=4)), max_size=8).map(
    "".join
)
any_text = st.one_of(st.text(), nasty_text, st.text(st.characters(codec=None), max_size=20))
spaces = st.sampled_from(["", " ", "  ", "\t", "\n"])


def padded(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(spaces, inner, spaces).map("".join)


datetimes = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30))
zones = st.sampled_from(["", "Z", "z", "+00:00", "+14:00", "-12:30"])
numberish = st.one_of(
    st.integers().map(str),
    st.integers(-(10**400), 10**400).map(str),
    st.floats().map(repr),
    st.floats().map(str),
    st.sampled_from(
        [
            "1e400",
            "-1e400",
            "nan",
            "inf",
            "-inf",
            "1_000",
            "0x10",
            "\uff11\uff12",
            "\u0663",
            "\u00b2",
        ]
    ),
)
datetime_text = st.one_of(
    st.tuples(datetimes.map(datetime.isoformat), zones).map("".join),
    st.dates().map(str),
    st.sampled_from(["9999-99-99", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"]),
)
boolean_words = st.sampled_from(
    ["true", "false", "T", "f", "yes", "No", "y", "n", "1", "0", "on", "OFF", "maybe", ""]
)
raw_values = st.one_of(any_text, padded(numberish), padded(datetime_text), padded(boolean_words))


def values_of(kind: str) -> st.SearchStrategy[str]:
    """Text a definition could declare for a parameter of this kind (MIN, MAX, OPTION)."""
    return {
        "string": st.text(max_size=10),
        "integer": st.integers(-1000, 1000).map(str),
        "real": st.floats(-1e6, 1e6, allow_nan=False).map(repr),
        "boolean": boolean_words.filter(bool),
        "datetime": datetimes.map(lambda d: d.isoformat() + "Z"),
    }[kind]


@st.composite
def parameter_defs(draw: st.DrawFn, declared: bool = True) -> ParameterDef:
    """A parameter of any kind; `declared`: its MIN, MAX and OPTIONs are values of its
    kind, else any text at all."""
    kind = draw(st.sampled_from(KIND_NAMES))
    bound = values_of(kind) if declared else raw_values
    return ParameterDef(
        name="p",
        kind=kind,
        min=draw(st.none() | bound),
        max=draw(st.none() | bound),
        options=draw(st.lists(bound, max_size=4)) if draw(st.booleans()) else [],
    )


# -- parameter values ------------------------------------------------------------------------


@PROFILE
@given(parameter_defs(declared=False), raw_values)
def test_any_text_against_any_declaration_is_a_value_or_a_parameter_error(
    pdef: ParameterDef, raw: str
) -> None:
    try:
        stored = check_value(pdef, raw)
    except ParameterError as exc:
        assert exc.name == pdef.name and exc.reason
        return
    assert isinstance(stored, str)
    python_value(pdef, stored)  # the job's typed value: no exception either


def _typed_stored(pdef: ParameterDef, stored: str) -> int | float | bool | datetime | str:
    if pdef.kind == "datetime":
        assert stored.endswith("Z"), stored
        return datetime.fromisoformat(stored.removesuffix("Z"))
    value = python_value(pdef, stored)
    expected = {"string": str, "integer": int, "real": float, "boolean": bool}[pdef.kind]
    assert type(value) is expected, (pdef.kind, value)
    return value


@PROFILE
@given(parameter_defs(), raw_values)
@example(  # compared as stored (to the millisecond), not as given
    ParameterDef(name="p", kind="datetime", min="2000-01-01T00:00:00.000001Z"),
    "2000-01-01T00:00:00.0001",
)
def test_a_value_accepted_satisfies_its_declaration(pdef: ParameterDef, raw: str) -> None:
    try:
        check_definition(pdef)
    except ParameterError:
        assume(False)  # a definition with such a parameter is not served (see below)
    try:
        stored = check_value(pdef, raw)
    except ParameterError:
        return
    check_text(pdef.name, stored)
    assert check_value(pdef, stored) == stored  # stored values are canonical
    value = _typed_stored(pdef, stored)
    if pdef.kind == "string":
        assert stored == raw  # text is kept exactly
    if isinstance(value, float):
        assert math.isfinite(value)
    plain = ParameterDef(name="b", kind=pdef.kind)  # the same kind, nothing declared
    if pdef.kind in ("integer", "real", "datetime"):
        if pdef.min is not None:
            assert value >= _typed_stored(plain, check_value(plain, pdef.min))  # type: ignore[operator]
        if pdef.max is not None:
            assert value <= _typed_stored(plain, check_value(plain, pdef.max))  # type: ignore[operator]
    if pdef.options:
        assert stored in [check_value(plain, o) for o in pdef.options]


@PROFILE
@given(parameter_defs(declared=False), st.none() | raw_values)
def test_a_declaration_is_accepted_or_refused_with_a_parameter_error(
    pdef: ParameterDef, default: str | None
) -> None:
    pdef = pdef.model_copy(update={"default": default})
    try:
        check_definition(pdef)
    except ParameterError as exc:
        assert exc.name == pdef.name and exc.reason
        return
    if default is not None:
        check_value(pdef, default)  # an accepted default is a value the parameter takes


# -- text in documents, file names and headers ----------------------------------------------


@PROFILE
@given(any_text)
def test_text_is_refused_exactly_when_xml_cannot_hold_it(text: str) -> None:
    safe = xml_safe(text)
    element = etree.Element("v", a=safe)
    element.text = safe
    parsed = etree.fromstring(etree.tostring(element, encoding="UTF-8"))
    assert parsed.get("a") == safe and (parsed.text or "") == safe  # as text, whatever it is
    assert len(safe) == len(text)
    try:
        check_text("p", text)
    except ParameterError as exc:
        assert safe != text and exc.name == "p"
    else:
        assert safe == text


@PROFILE
@given(any_text)
def test_error_messages_are_one_printable_line(message: str) -> None:
    line = one_line(message)
    assert line.isprintable() and "\n" not in line and "\r" not in line
    if message.isprintable():
        assert line == message


@PROFILE
@given(any_text)
def test_safe_file_names_are_safe(name: str) -> None:
    safe = safe_file_name(name)
    assert safe == "" or re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}", safe), safe


@PROFILE
@given(any_text)
def test_content_disposition_never_breaks_its_header(name: str) -> None:
    header = content_disposition(name)
    assert header.isascii() and header.isprintable(), header
    match = re.fullmatch(
        r'inline; filename="([A-Za-z0-9._-]+)"(?:; filename\*=UTF-8\'\'(\S+))?', header
    )
    assert match is not None, header
    fallback, encoded = match.groups()
    if encoded is None:
        assert fallback == (name or "file")
    elif not any("\ud800" <= c <= "\udfff" for c in name):
        assert unquote(encoded, errors="strict") == name


# -- definition loading ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("properties") / "candidate_vot.xml"


def load_or_problem(path: Path) -> None:
    """The property of every file: a definition, consistent, or a problem naming the file."""
    try:
        jobdef = load_votable(path)
    except JobDefError as exc:
        assert exc.path == path and exc.field and isinstance(exc.reason, str)
        return
    names = [p.name for p in jobdef.parameters] + [u.name for u in jobdef.used]
    names += [g.name for g in jobdef.generated]
    assert len({n.lower() for n in names}) == len(names)
    for pdef in jobdef.parameters:
        check_definition(pdef)


SOURCES = [p.read_bytes() for p in sorted(TEST_JOBDEFS.glob("*.xml"))] + [
    p.read_bytes() for p in sorted((ROOT / "job_definitions").glob("*.xml"))
]
ATTRIBUTE = re.compile(rb'="[^"]*"')


@st.composite
def mutated_definitions(draw: st.DrawFn) -> bytes:
    data = draw(st.sampled_from(SOURCES))
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["attribute", "delete", "insert", "duplicate", "bytes"]))
        if how == "attribute":
            spans = [m.span() for m in ATTRIBUTE.finditer(data)] or [(0, 0)]
            start, end = draw(st.sampled_from(spans))
            value = draw(nasty_text).encode("utf-8", "surrogatepass")
            data = data[:start] + b'="' + value + b'"' + data[end:]
        elif how == "delete":
            start = draw(st.integers(0, len(data)))
            data = data[:start] + data[start + draw(st.integers(1, 200)) :]
        elif how == "insert":
            at = draw(st.integers(0, len(data)))
            piece = draw(
                st.sampled_from(
                    [b"<PARAM/>", b"</GROUP>", b"<GROUP name='InputParams'>", b"&lol;", b"\xff"]
                )
                | nasty_text.map(lambda t: t.encode("utf-8", "surrogatepass"))
            )
            data = data[:at] + piece + data[at:]
        elif how == "duplicate":
            lines = data.split(b"\n")
            at = draw(st.integers(0, len(lines) - 1))
            data = b"\n".join([*lines[: at + 1], lines[at], *lines[at + 1 :]])
        else:
            data = draw(st.binary(max_size=300))
    return data


@PROFILE
@given(mutated_definitions())
def test_mutated_definitions_load_or_are_reported(scratch: Path, data: bytes) -> None:
    scratch.write_bytes(data)
    load_or_problem(scratch)


@PROFILE
@given(st.binary(max_size=500) | any_text.map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_any_bytes_load_or_are_reported(scratch: Path, data: bytes) -> None:
    scratch.write_bytes(data)
    load_or_problem(scratch)


def env_names() -> st.SearchStrategy[str]:
    return st.from_regex(NAME_PATTERN, fullmatch=True).filter(
        lambda n: n.upper() not in RESERVED_ENV and not n.upper().startswith(RESERVED_ENV_PREFIXES)
    )


xml_text = st.text(st.characters(codec="utf-8").filter(lambda c: not check_text_fails(c)))


def check_text_fails(text: str) -> bool:
    try:
        check_text("t", text)
    except ParameterError:
        return True
    return False


def default_of(datatype: str) -> st.SearchStrategy[str]:
    kind = KINDS[datatype.lower()]
    return {
        "string": xml_text,
        "integer": st.integers(-(2**63), 2**63).map(str),
        "real": st.floats(allow_nan=False, allow_infinity=False).map(repr),
        "boolean": st.sampled_from(["true", "false"]),
        "datetime": datetimes.map(lambda d: d.isoformat(timespec="milliseconds") + "Z"),
    }[kind]


@st.composite
def definitions(draw: st.DrawFn) -> tuple[str, str, list[tuple[str, str, str | None]]]:
    """A valid definition: its name, description and (name, datatype, default) parameters."""
    name = draw(st.from_regex(r"[A-Za-z][A-Za-z0-9_.-]{0,20}", fullmatch=True))
    description = draw(xml_text)
    names = draw(st.lists(env_names(), max_size=5, unique_by=str.lower))
    params = []
    for pname in names:
        datatype = draw(st.sampled_from(sorted(KINDS)))
        params.append((pname, datatype, draw(st.none() | default_of(datatype))))
    return name, description, params


def votable(name: str, description: str, params: list[tuple[str, str, str | None]]) -> bytes:
    def tag(local: str) -> str:
        return f"{{{VOTABLE_NS}}}{local}"

    root = etree.fromstring(f'<VOTABLE xmlns="{VOTABLE_NS}" version="1.3"/>')
    resource = etree.SubElement(
        root, tag("RESOURCE"), name=name, type="meta", utype="voprov:ActivityDescription"
    )
    etree.SubElement(resource, tag("DESCRIPTION")).text = description
    etree.SubElement(resource, tag("PARAM"), name="script", value="true", datatype="char")
    group = etree.SubElement(resource, tag("GROUP"), name="InputParams")
    for pname, datatype, default in params:
        param = etree.SubElement(group, tag("PARAM"), name=pname, datatype=datatype)
        if default is not None:
            param.set("value", default)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


@PROFILE
@given(definitions())
def test_valid_definitions_round_trip(
    scratch: Path, definition: tuple[str, str, list[tuple[str, str, str | None]]]
) -> None:
    name, description, params = definition
    scratch.write_bytes(votable(name, description, params))
    jobdef = load_votable(scratch)
    assert jobdef.name == name
    assert jobdef.description == " ".join(description.split())
    assert [(p.name, p.datatype, p.kind) for p in jobdef.parameters] == [
        (n, d, KINDS[d.lower()]) for n, d, _ in params
    ]
    assert [p.default for p in jobdef.parameters] == [v or None for _, _, v in params]
    assert [p.required for p in jobdef.parameters] == [not v for _, _, v in params]

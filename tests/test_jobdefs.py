"""Job definitions: loading ActivityDescription VOTables, reporting bad ones, checking values."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from opus.errors import ParameterError
from opus.jobdefs.model import ParameterDef
from opus.jobdefs.params import check_value
from opus.jobdefs.registry import load_registry
from opus.jobdefs.votable import JobDefError, load_votable
from tests.servers import ROOT, TEST_JOBDEFS, have

pytestmark = pytest.mark.any_database  # definition files

SHIPPED = ROOT / "job_definitions"

OPUS_TEMPLATE = """<VOTABLE xmlns="http://www.ivoa.net/xml/VOTable/v1.3" version="1.3">
  <RESOURCE ID="{name}" name="{name}" type="meta" utype="voprov:ActivityDescription">
    <DESCRIPTION>made by a test</DESCRIPTION>
    {top}
    <GROUP name="InputParams">{params}</GROUP>
    <GROUP name="Used"/>
    <GROUP name="Generated">{generated}</GROUP>
  </RESOURCE>
</VOTABLE>
"""
SCRIPT = '<PARAM name="script" value="true" arraysize="*" datatype="char"/>'


def write(
    folder: Path,
    name: str,
    top: str = SCRIPT,
    params: str = "",
    generated: str = "",
    file_name: str | None = None,
) -> Path:
    path = folder / (file_name or f"{name}_vot.xml")
    path.write_text(OPUS_TEMPLATE.format(name=name, top=top, params=params, generated=generated))
    return path


def test_opus_layout_loads_unchanged() -> None:
    echo = load_votable(TEST_JOBDEFS / "opus_echo_vot.xml")
    assert (echo.name, echo.version, echo.type, echo.subtype) == ("opus_echo", "2", "test", "echo")
    assert (echo.contact_name, echo.execution_duration, echo.quote) == ("test-admin", 30, 5)
    assert echo.execution.script is not None and "\r" not in echo.execution.script
    params = {p.name: p for p in echo.parameters}
    assert params["text"].required and params["text"].default is None
    count = params["count"]
    assert (count.kind, count.min, count.max) == ("integer", "1", "100")
    assert params["mode"].options == ["plain", "fancy"]
    assert params["ratio"].kind == "real" and not params["ratio"].required  # type="no_query"
    assert params["flag"].kind == "boolean"
    assert [(g.name, g.file_name, g.content_type) for g in echo.generated] == [
        ("output", "output.txt", "text/plain")
    ]
    append = load_votable(TEST_JOBDEFS / "opus_append_vot.xml")
    assert [(u.name, u.url_template, u.multiplicity) for u in append.used] == [
        ("input", "file://$ID", 1)
    ]


def test_retry_on_worker_loss_is_off_unless_declared() -> None:
    assert load_votable(TEST_JOBDEFS / "resilient_vot.xml").retry_on_worker_loss
    assert not load_votable(TEST_JOBDEFS / "sleeper_vot.xml").retry_on_worker_loss


def test_shipped_definitions_load() -> None:
    registry = load_registry([SHIPPED])
    assert "hello" in registry.names()
    assert registry.problems == []


def test_definition_files_are_valid_votables() -> None:
    stilts = have("stilts")
    for path in [*SHIPPED.glob("*.xml"), *TEST_JOBDEFS.glob("*.xml")]:
        out = subprocess.run([stilts, "votlint", str(path)], capture_output=True, text=True)
        problems = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
        assert problems == [], f"{path.name}: {problems}"


@pytest.mark.parametrize(
    ("params", "top", "generated", "field", "reason"),
    [
        (
            '<PARAM name="x" datatype="quaternion" value="1"/>',
            SCRIPT,
            "",
            "InputParams",
            "unknown datatype",
        ),
        (
            '<PARAM name="BASH_ENV" datatype="char" arraysize="*" value="x"/>',
            SCRIPT,
            "",
            "parameters 'BASH_ENV'",
            "reserved",
        ),
        ('<PARAM name="2x" datatype="int" value="1"/>', SCRIPT, "", "parameters '2x'", "letter"),
        (
            '<PARAM name="a" datatype="int" value="1"/><PARAM name="A" datatype="int" value="1"/>',
            SCRIPT,
            "",
            "definition",
            "declared twice",
        ),
        ("", "", "", "execution", "exactly one of script, command, callable, service or pipeline"),
        (
            "",
            SCRIPT + '<PARAM name="callable" value="m:f" arraysize="*" datatype="char"/>',
            "",
            "execution",
            "found script, callable",
        ),
        (
            "",
            f'<PARAM name="script" value="{"echo x; " * 20_000}" arraysize="*" datatype="char"/>',
            "",
            "execution",
            "bash takes as one argument",
        ),
        (
            "",
            '<PARAM name="command" value="not json" arraysize="*" datatype="char"/>',
            "",
            "script/command/callable/pipeline",
            "",
        ),
        (
            "",
            SCRIPT,
            '<GROUP name="out"><PARAM name="default" value="../escape.txt" datatype="char"'
            ' arraysize="*"/></GROUP>',
            "generated 'out'",
            "inside the job directory",
        ),
        (
            "",
            SCRIPT + '<PARAM name="retryOnWorkerLoss" value="twice" datatype="boolean"/>',
            "",
            "retryOnWorkerLoss",
            "valid boolean",
        ),
    ],
)
def test_invalid_definitions_name_file_and_field(
    tmp_path: Path, params: str, top: str, generated: str, field: str, reason: str
) -> None:
    path = write(tmp_path, "bad", top=top, params=params, generated=generated)
    with pytest.raises(JobDefError) as caught:
        load_votable(path)
    message = str(caught.value)
    assert message.startswith(str(path))
    assert field in message and reason in message


def test_not_xml_and_not_an_activity_description(tmp_path: Path) -> None:
    (tmp_path / "junk_vot.xml").write_text("<VOTABLE><RESOURCE>")
    (tmp_path / "plain_vot.xml").write_text('<VOTABLE version="1.3"><RESOURCE/></VOTABLE>')
    write(tmp_path, "good")
    registry = load_registry([tmp_path])
    assert registry.names() == ["good"]
    reported = {p.path.name: (p.field, p.reason) for p in registry.problems}
    assert reported["junk_vot.xml"][0] == "file"
    assert "voprov:ActivityDescription" in reported["plain_vot.xml"][1]


def test_later_folders_override_earlier_ones(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    write(first, "same", params='<PARAM name="x" datatype="int" value="1"/>')
    write(second, "same", params='<PARAM name="y" datatype="int" value="1"/>')
    registry = load_registry([first, second])
    jobdef = registry.get("same")
    assert jobdef is not None and [p.name for p in jobdef.parameters] == ["y"]


@pytest.mark.parametrize(
    ("definition", "raw", "stored"),
    [
        (ParameterDef(name="n", kind="integer", min="1", max="10"), " 7 ", "7"),
        (ParameterDef(name="r", kind="real", min="0", max="1"), "0.25", "0.25"),
        (ParameterDef(name="b", kind="boolean"), "Yes", "true"),
        (ParameterDef(name="b", kind="boolean"), "0", "false"),
        (
            ParameterDef(name="t", kind="datetime"),
            "2026-01-31T12:00:00+01:00",
            "2026-01-31T11:00:00.000Z",
        ),
        (ParameterDef(name="s", options=["a", "b"]), "b", "b"),
        (ParameterDef(name="s"), "  spaces kept  ", "  spaces kept  "),
    ],
)
def test_good_values_are_normalised(definition: ParameterDef, raw: str, stored: str) -> None:
    assert check_value(definition, raw) == stored


@pytest.mark.parametrize(
    ("definition", "raw", "reason"),
    [
        (ParameterDef(name="n", kind="integer"), "1.5", "not an integer"),
        (ParameterDef(name="n", kind="integer", min="1"), "0", "below the minimum 1"),
        (ParameterDef(name="r", kind="real", max="1"), "1.5", "above the maximum 1"),
        (ParameterDef(name="r", kind="real"), "nan", "not a finite number"),
        (ParameterDef(name="b", kind="boolean"), "maybe", "not a boolean"),
        (ParameterDef(name="t", kind="datetime"), "yesterday", "not an ISO 8601 date-time"),
        (ParameterDef(name="t", kind="datetime"), "0001-01-01T00:00:00+14:00", "outside the years"),
        (ParameterDef(name="s", options=["a", "b"]), "c", "not one of a, b"),
        (ParameterDef(name="s"), "a\x00b", "NUL"),
    ],
)
def test_bad_values_say_why(definition: ParameterDef, raw: str, reason: str) -> None:
    with pytest.raises(ParameterError) as caught:
        check_value(definition, raw)
    assert caught.value.name == definition.name
    assert reason in caught.value.reason

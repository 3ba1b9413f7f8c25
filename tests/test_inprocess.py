"""The HTTP contract in process: the WSGI app of `create_app` driven by webtest.

A fast tier beside test_uws_api.py: no gunicorn and no executor, a real SQLite database
in a temporary folder. Without an executor a job given PHASE=RUN stays QUEUED, so these
tests check the rules that the web process applies on its own: parameters, phases,
filters, limits, WAIT on final phases, errors as one line of text. One app serves the
module: each test makes jobs of its own, and the job lists it reads are of definitions
no other test here writes to, or it compares them before and after.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy
import webtest
from lxml import etree

from opus.app import create_app
from opus.config import Settings
from opus.store.db import Database

ROOT = Path(__file__).resolve().parent.parent
UWS_NS = "http://www.ivoa.net/xml/UWS/v1.0"
XSI_NIL = "{http://www.w3.org/2001/XMLSchema-instance}nil"
NS = {"uws": UWS_NS}
NO_SUCH_ID = "0123456789abcdef"
MAX_DURATION = 100  # the server's maximum execution duration in these tests, s
DEFAULT_DAYS = 1.0  # a job's default lifetime here
MAX_DAYS = 2.0  # and the longest one may ask for
MAX_WAIT = 20  # a WAIT that wrongly blocks costs at most this, s


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        data_dir=tmp_path_factory.mktemp("opus-inprocess"),
        database_url="",
        broker_url="",
        allow_anonymous=True,
        jobdef_path=str(ROOT / "tests" / "jobdefs"),
        max_execution_duration=MAX_DURATION,
        default_destruction_days=DEFAULT_DAYS,
        max_destruction_days=MAX_DAYS,
        max_wait=MAX_WAIT,
    )


@pytest.fixture(scope="module")
def app(settings: Settings) -> webtest.TestApp:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    schema = Database(settings.db_url)
    schema.create_schema()  # as `opus serve` does before it starts the web workers
    schema.engine.dispose()
    return webtest.TestApp(create_app(settings))


# -- helpers --------------------------------------------------------------------------------


def assert_bad(response: webtest.TestResponse, status: int, *words: str) -> None:
    """An error answer: the status, one text line naming what is wrong, never HTML."""
    assert response.status_int == status, (response.status, response.text)
    assert response.headers["Content-Type"].startswith("text/plain"), response.headers
    assert "Traceback" not in response.text
    assert "<html" not in response.text.lower()
    for word in words:
        assert word.lower() in response.text.lower(), (word, response.text)


def create(app: webtest.TestApp, jobdef: str, **params: str) -> str:
    """A new job (PENDING unless PHASE=RUN is given): its path."""
    response = app.post(f"/rest/{jobdef}", params, status=303)
    location = response.headers["Location"]
    assert location.startswith(f"http://localhost:80/rest/{jobdef}/"), location
    return location.removeprefix("http://localhost:80")


def job_doc(app: webtest.TestApp, path: str, query: str = "") -> etree._Element:
    response = app.get(f"{path}{query}", status=200)
    assert response.headers["Content-Type"].startswith("application/xml")
    doc = etree.fromstring(response.body)
    assert doc.tag == f"{{{UWS_NS}}}job"
    return doc


def phase_of(app: webtest.TestApp, path: str) -> str:
    response = app.get(f"{path}/phase", status=200)
    assert response.headers["Content-Type"].startswith("text/plain")
    return response.text.strip()


def listed(app: webtest.TestApp, jobdef: str, query: str = "") -> list[str]:
    response = app.get(f"/rest/{jobdef}{query}", status=200)
    doc = etree.fromstring(response.body)
    assert doc.tag == f"{{{UWS_NS}}}jobs"
    return [ref.get("id") for ref in doc.iterfind("uws:jobref", NS)]


def job_id(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def utc(text: str) -> datetime:
    """A UWS time (ISO 8601 with Z) as naive UTC."""
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text.removesuffix("Z"))


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def timed_phase(app: webtest.TestApp, path: str, query: str) -> tuple[float, str]:
    """GET the job with a query (WAIT...): seconds taken and the phase answered."""
    started = time.monotonic()
    doc = job_doc(app, path, query)
    return time.monotonic() - started, str(doc.findtext("uws:phase", namespaces=NS))


# -- the job list ---------------------------------------------------------------------------


def test_job_list_phase_filter_is_a_case_insensitive_union(app: webtest.TestApp) -> None:
    pending = job_id(create(app, "plots"))
    queued = job_id(create(app, "plots", PHASE="RUN"))
    aborted_path = create(app, "plots")
    app.post(f"{aborted_path}/phase", {"PHASE": "ABORT"}, status=303)
    aborted = job_id(aborted_path)

    assert pending in listed(app, "plots", "?PHASE=PENDING")
    assert queued not in listed(app, "plots", "?PHASE=PENDING")
    union = listed(app, "plots", "?PHASE=queued&phase=Aborted")
    assert queued in union and aborted in union and pending not in union
    everything = listed(app, "plots")
    assert {pending, queued, aborted} <= set(everything)


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("?PHASE=RUN", "PHASE"),
        ("?PHASE=FOO", "PHASE"),
        ("?AFTER=yesterday", "AFTER"),
        ("?AFTER=2024-13-45T99:00:00Z", "AFTER"),
        ("?LAST=abc", "LAST"),
        ("?LAST=-1", "LAST"),
        ("?LAST=100001", "LAST"),
    ],
)
def test_job_list_bad_filters_are_400(app: webtest.TestApp, query: str, name: str) -> None:
    assert_bad(app.get(f"/rest/hello{query}", status="*"), 400, f"parameter {name}")


def test_job_list_last_gives_the_newest_first(app: webtest.TestApp) -> None:
    made = []
    for _ in range(4):
        made.append(job_id(create(app, "tally")))
        time.sleep(0.01)  # distinct creation times: ties are ordered by id
    assert listed(app, "tally", "?LAST=3") == made[::-1][:3]
    assert listed(app, "tally", "?LAST=0") == []
    assert listed(app, "tally")[-4:] == made  # without LAST: oldest first
    assert listed(app, "tally", "?LAST=100000")[:4] == made[::-1]  # the largest LAST allowed


def test_archived_jobs_are_listed_only_when_asked(app: webtest.TestApp, settings: Settings) -> None:
    path = create(app, "concat")
    kept = job_id(create(app, "concat"))
    # No UWS request archives a job (the destruction sweep may): set it in the store.
    engine = sqlalchemy.create_engine(settings.db_url)
    try:
        with engine.begin() as conn:
            changed = conn.execute(
                sqlalchemy.text("UPDATE jobs SET phase = 'ARCHIVED' WHERE id = :id"),
                {"id": job_id(path)},
            ).rowcount
    finally:
        engine.dispose()
    assert changed == 1
    assert phase_of(app, path) == "ARCHIVED"
    everything = listed(app, "concat")
    assert kept in everything and job_id(path) not in everything
    assert listed(app, "concat", "?PHASE=archived") == [job_id(path)]
    both = listed(app, "concat", "?PHASE=ARCHIVED&PHASE=PENDING")
    assert job_id(path) in both and kept in both
    # ARCHIVED is a final phase: WAIT answers at once
    elapsed, phase = timed_phase(app, path, "?WAIT=10")
    assert phase == "ARCHIVED" and elapsed < 1, elapsed


def test_job_list_after_excludes_older_jobs(app: webtest.TestApp) -> None:
    old = create(app, "argv")
    created = job_doc(app, old).findtext("uws:creationTime", namespaces=NS)
    time.sleep(0.01)
    new = job_id(create(app, "argv"))
    after = listed(app, "argv", f"?AFTER={created}")
    assert new in after and job_id(old) not in after


def test_job_list_of_an_unknown_definition_is_404(app: webtest.TestApp) -> None:
    assert_bad(app.get("/rest/no_such_def", status="*"), 404, "no_such_def")
    assert_bad(app.post("/rest/no_such_def", {"x": "1"}, status="*"), 404, "no_such_def")


# -- creation and parameters ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "name", "reason"),
    [
        ({"bogus": "1"}, "bogus", "unknown"),
        ({"count": "abc"}, "count", "integer"),
        ({"count": "2.5"}, "count", "integer"),
        ({"count": "0"}, "count", "minimum"),
        ({"count": "101"}, "count", "maximum"),
        ({"mode": "wild"}, "mode", "one of"),
        ({"ratio": "x"}, "ratio", "number"),
        ({"ratio": "inf"}, "ratio", "finite"),
        ({"ratio": "1.5"}, "ratio", "maximum"),
        ({"ratio": "-0.1"}, "ratio", "minimum"),
        ({"flag": "maybe"}, "flag", "boolean"),
        ({"RUNID": "r" * 257}, "RUNID", "256"),
        ({"EXECUTIONDURATION": "-5"}, "EXECUTIONDURATION", "negative"),
        ({"EXECUTIONDURATION": "soon"}, "EXECUTIONDURATION", "whole number"),
        ({"DESTRUCTION": "next week"}, "DESTRUCTION", "ISO 8601"),
        ({"PHASE": "ABORT"}, "PHASE", "RUN"),
        ({"text": "again"}, "text", "more than once"),
    ],
)
def test_bad_values_at_creation_are_400_and_create_nothing(
    app: webtest.TestApp, params: dict[str, str], name: str, reason: str
) -> None:
    before = listed(app, "opus_echo")
    fields = [("text", "t"), *params.items()]
    response = app.post("/rest/opus_echo", fields, status="*")
    assert_bad(response, 400, f"parameter {name}", reason)
    assert listed(app, "opus_echo") == before


def test_unknown_parameter_answer_lists_the_known_ones(app: webtest.TestApp) -> None:
    response = app.post("/rest/opus_echo", {"text": "t", "colour": "red"}, status="*")
    assert_bad(response, 400, "parameter colour", "unknown")
    known = response.text.split("known:", 1)[1]
    for name in ("text", "count", "mode", "ratio", "flag"):
        assert name in known, response.text
    for control in ("PHASE", "RUNID", "EXECUTIONDURATION", "DESTRUCTION"):
        assert control in known, response.text  # creation also takes these
    path = create(app, "opus_echo", text="t")
    response = app.post(f"{path}/parameters", {"colour": "red"}, status="*")
    assert_bad(response, 400, "parameter colour", "unknown")
    assert all(name in response.text for name in ("text", "count", "mode", "ratio", "flag"))
    # a parameter name matches whatever its case
    app.post(f"{path}/parameters", {"COUNT": "4"}, status=303)
    assert app.get(f"{path}/parameters/count", status=200).text == "4"


def test_bad_values_on_a_pending_job_are_400(app: webtest.TestApp) -> None:
    path = create(app, "opus_echo", text="t")
    for params, name in (({"count": "abc"}, "count"), ({"nope": "1"}, "nope")):
        assert_bad(app.post(f"{path}/parameters", params, status="*"), 400, f"parameter {name}")
    assert_bad(app.put(f"{path}/parameters/flag", "perhaps", status="*"), 400, "parameter flag")
    assert phase_of(app, path) == "PENDING"


def test_good_values_are_stored_canonical_with_defaults(app: webtest.TestApp) -> None:
    path = create(
        app, "opus_echo", text="hi", count="3", mode="fancy", ratio="0.5", flag="yes", RUNID="r1"
    )
    doc = job_doc(app, path)
    assert doc.findtext("uws:phase", namespaces=NS) == "PENDING"
    assert doc.findtext("uws:runId", namespaces=NS) == "r1"
    values = {p.get("id"): p.text or "" for p in doc.iterfind("uws:parameters/uws:parameter", NS)}
    assert values == {"text": "hi", "count": "3", "mode": "fancy", "ratio": "0.5", "flag": "true"}
    # and a default recorded although not given
    defaults = create(app, "opus_echo", text="x")
    assert app.get(f"{defaults}/parameters/count", status=200).text == "1"


def test_job_document_is_a_uws_1_1_job(app: webtest.TestApp) -> None:
    path = create(app, "opus_echo", text="doc", RUNID="run-9")
    doc = job_doc(app, path)
    assert doc.get("version") == "1.1"
    assert [etree.QName(child).localname for child in doc] == [
        "jobId",
        "runId",
        "ownerId",
        "phase",
        "quote",
        "creationTime",
        "startTime",
        "endTime",
        "executionDuration",
        "destruction",
        "parameters",
        "results",
    ]
    assert doc.findtext("uws:jobId", namespaces=NS) == job_id(path)
    for nil in ("ownerId", "startTime", "endTime"):  # anonymous, and not started
        element = doc.find(f"uws:{nil}", NS)
        assert element is not None and element.get(XSI_NIL) == "true", nil
    created = utc(doc.findtext("uws:creationTime", namespaces=NS) or "")
    assert abs((created - now()).total_seconds()) < 60
    quote = utc(doc.findtext("uws:quote", namespaces=NS) or "")
    assert quote - created == timedelta(seconds=5)  # the definition's quote
    for parameter in doc.iterfind("uws:parameters/uws:parameter", NS):
        assert parameter.get("byReference") == "false", parameter.get("id")
    assert doc.find("uws:results", NS) is not None and len(doc.find("uws:results", NS)) == 0
    # the parameters and results sub-resources are documents of their own
    params = etree.fromstring(app.get(f"{path}/parameters", status=200).body)
    assert params.tag == f"{{{UWS_NS}}}parameters"
    assert {p.get("id"): p.text for p in params.iterfind("uws:parameter", NS)}["text"] == "doc"
    results = etree.fromstring(app.get(f"{path}/results", status=200).body)
    assert results.tag == f"{{{UWS_NS}}}results" and len(results) == 0
    # and the list shows the job with its phase and run id
    listing = etree.fromstring(app.get("/rest/opus_echo", status=200).body)
    assert listing.get("version") == "1.1"
    ref = listing.find(f"uws:jobref[@id='{job_id(path)}']", NS)
    assert ref is not None
    assert ref.get("{http://www.w3.org/1999/xlink}href") == f"http://localhost:80{path}"
    assert ref.findtext("uws:phase", namespaces=NS) == "PENDING"
    assert ref.findtext("uws:runId", namespaces=NS) == "run-9"


def test_run_without_a_required_parameter_is_400(app: webtest.TestApp) -> None:
    before = listed(app, "pysquare")
    response = app.post("/rest/pysquare", {"label": "a", "PHASE": "RUN"}, status="*")
    assert_bad(response, 400, "parameter x", "required")
    assert listed(app, "pysquare") == before
    # PENDING without it is allowed; RUN is then refused and the job stays PENDING
    path = create(app, "pysquare", label="a")
    assert_bad(app.post(f"{path}/phase", {"PHASE": "RUN"}, status="*"), 400, "parameter x")
    assert phase_of(app, path) == "PENDING"


def test_phase_run_at_creation_answers_303_to_a_queued_job(app: webtest.TestApp) -> None:
    response = app.post("/rest/pysquare", {"x": "7", "PHASE": "run"}, status=303)
    path = response.headers["Location"].removeprefix("http://localhost:80")
    doc = job_doc(app, path)
    assert doc.findtext("uws:jobId", namespaces=NS) == job_id(path)
    assert doc.findtext("uws:phase", namespaces=NS) == "QUEUED"  # no executor here
    # RUN again changes nothing; parameters are fixed once queued
    assert (
        app.post(f"{path}/phase", {"PHASE": "RUN"}, status=303).headers["Location"].endswith(path)
    )
    assert_bad(app.post(f"{path}/parameters", {"x": "8"}, status="*"), 403, "PENDING")
    assert_bad(app.post(path, {"x": "8"}, status="*"), 403)
    assert app.get(f"{path}/parameters/x", status=200).text == "7"


def test_abort_a_pending_job_then_run_is_403(app: webtest.TestApp) -> None:
    path = create(app, "pysquare", x="2")
    app.post(f"{path}/phase", {"PHASE": "ABORT"}, status=303)
    assert phase_of(app, path) == "ABORTED"
    assert "aborted" in app.get(f"{path}/error", status=200).text.lower()
    assert_bad(app.post(f"{path}/phase", {"PHASE": "RUN"}, status="*"), 403, "ABORTED")
    # ABORT again is harmless
    app.post(f"{path}/phase", {"PHASE": "ABORT"}, status=303)
    assert phase_of(app, path) == "ABORTED"


@pytest.mark.parametrize(("value", "name"), [("JUMP", "PHASE"), ("SUSPEND", "PHASE")])
def test_bad_phase_on_a_job_is_400(app: webtest.TestApp, value: str, name: str) -> None:
    path = create(app, "pysquare", x="1")
    assert_bad(app.post(f"{path}/phase", {"PHASE": value}, status="*"), 400, f"parameter {name}")
    assert_bad(app.post(f"{path}/phase", {}, status="*"), 400, "parameter PHASE")
    assert_bad(app.post(path, {"ACTION": "EXPLODE"}, status="*"), 400, "parameter ACTION")
    assert phase_of(app, path) == "PENDING"


def test_execution_duration_is_capped_and_checked(app: webtest.TestApp) -> None:
    path = create(app, "opus_echo", text="t", EXECUTIONDURATION="5000")
    assert app.get(f"{path}/executionduration", status=200).text == str(MAX_DURATION)
    default = create(app, "opus_echo", text="t")
    assert app.get(f"{default}/executionduration", status=200).text == "30"  # its definition's
    app.post(f"{default}/executionduration", {"EXECUTIONDURATION": "10"}, status=303)
    assert job_doc(app, default).findtext("uws:executionDuration", namespaces=NS) == "10"
    for bad in ("-1", "ten"):
        response = app.post(f"{default}/executionduration", {"EXECUTIONDURATION": bad}, status="*")
        assert_bad(response, 400, "parameter EXECUTIONDURATION")
    assert app.get(f"{default}/executionduration", status=200).text == "10"


def test_destruction_default_and_maximum_come_from_the_settings(app: webtest.TestApp) -> None:
    path = create(app, "opus_echo", text="t")
    default = utc(app.get(f"{path}/destruction", status=200).text)
    assert abs(default - (now() + timedelta(days=DEFAULT_DAYS))) < timedelta(minutes=1)
    far = create(app, "opus_echo", text="t", DESTRUCTION="2999-01-01T00:00:00Z")
    capped = utc(app.get(f"{far}/destruction", status=200).text)
    assert abs(capped - (now() + timedelta(days=MAX_DAYS))) < timedelta(minutes=1)

    soon = (now() + timedelta(hours=12)).replace(microsecond=250000)
    response = app.post(f"{path}/destruction", {"DESTRUCTION": soon.isoformat() + "Z"}, status=303)
    assert response.headers["Location"] == f"http://localhost:80{path}"
    kept = app.get(f"{path}/destruction", status=200).text
    assert utc(kept) == soon
    assert job_doc(app, path).findtext("uws:destruction", namespaces=NS) == kept
    app.post(f"{path}/destruction", {"DESTRUCTION": "2999-01-01"}, status=303)
    later = utc(app.get(f"{path}/destruction", status=200).text)
    assert abs(later - (now() + timedelta(days=MAX_DAYS))) < timedelta(minutes=1)
    for fields in ({"DESTRUCTION": "whenever"}, {}):
        response = app.post(f"{path}/destruction", fields, status="*")
        assert_bad(response, 400, "parameter DESTRUCTION")


def test_action_delete_redirects_to_the_list_and_the_job_is_gone(app: webtest.TestApp) -> None:
    path = create(app, "failing")
    response = app.post(path, {"ACTION": "delete"}, status=303)
    assert response.headers["Location"] == "http://localhost:80/rest/failing"
    assert_bad(app.get(path, status="*"), 404, job_id(path))
    assert job_id(path) not in listed(app, "failing")
    other = create(app, "failing")
    assert app.delete(other, status=303).headers["Location"].endswith("/rest/failing")
    assert_bad(app.get(f"{other}/phase", status="*"), 404)


@pytest.mark.parametrize(
    "path",
    [
        f"/rest/hello/{NO_SUCH_ID}",
        f"/rest/hello/{NO_SUCH_ID}/phase",
        f"/rest/hello/{NO_SUCH_ID}/results/x",
        "/rest/hello/not-an-id",
        "/no/such/path",
        "/jdl/no_such_def/json",
    ],
)
def test_unknown_things_are_404_as_text(app: webtest.TestApp, path: str) -> None:
    assert_bad(app.get(path, status="*"), 404)


def test_a_job_of_another_definition_is_404(app: webtest.TestApp) -> None:
    path = create(app, "pysquare", x="1")
    assert_bad(app.get(f"/rest/plots/{job_id(path)}", status="*"), 404)


# -- WAIT -----------------------------------------------------------------------------------


def test_wait_answers_at_once_for_zero_and_final_phases(app: webtest.TestApp) -> None:
    pending = create(app, "sleeper")
    elapsed, phase = timed_phase(app, pending, "?WAIT=0")
    assert phase == "PENDING" and elapsed < 1, elapsed
    app.post(f"{pending}/phase", {"PHASE": "ABORT"}, status=303)
    for query in ("?WAIT=10", "?WAIT=-1", "?wait=10&phase=aborted"):
        elapsed, phase = timed_phase(app, pending, query)
        assert phase == "ABORTED" and elapsed < 1, (query, elapsed)
    # PHASE names a phase other than the current one: no waiting either
    queued = create(app, "sleeper", PHASE="RUN")
    elapsed, phase = timed_phase(app, queued, "?WAIT=10&PHASE=EXECUTING")
    assert phase == "QUEUED" and elapsed < 1, elapsed


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("?WAIT=abc", "WAIT"),
        ("?WAIT=1.5", "WAIT"),
        ("?WAIT=", "WAIT"),
        ("?WAIT=1&WAIT=2", "WAIT"),
        ("?WAIT=1&PHASE=X", "PHASE"),
    ],
)
def test_bad_wait_is_400(app: webtest.TestApp, query: str, name: str) -> None:
    path = create(app, "sleeper")
    assert_bad(app.get(f"{path}{query}", status="*"), 400, f"parameter {name}")


# -- hostile input (end to end, with jobs that run: test_hostile_input.py) ------------------

MARKUP = "<script>alert(1)</script> ]]> \"double\" 'single' &amp; <b>b</b>"


@pytest.mark.parametrize("value", ["a\x01b", "\x1b[31m", "tab\x0bvertical", "\ufffe", "\uffff"])
def test_values_xml_cannot_hold_are_400_naming_the_parameter(
    app: webtest.TestApp, value: str
) -> None:
    before = listed(app, "opus_echo")
    for field in ("text", "mode", "RUNID"):
        params = {"text": "t", field: value}
        response = app.post("/rest/opus_echo", params, status="*")
        assert_bad(response, 400, f"parameter {field}", "XML cannot hold")
    response = app.post("/rest/concat", {"inputs": f"https://example.org/{value}"}, status="*")
    assert_bad(response, 400, "parameter inputs", "XML cannot hold")
    path = create(app, "opus_echo", text="t")
    assert_bad(app.post(f"{path}/parameters", {"text": value}, status="*"), 400, "parameter text")
    assert_bad(app.put(f"{path}/parameters/text", value.encode(), status="*"), 400, "text")
    assert app.get(f"{path}/parameters/text", status=200).text == "t"
    assert listed(app, "opus_echo") == [*before, job_id(path)]  # the list still reads


def test_markup_in_values_is_text_in_uws_documents(app: webtest.TestApp) -> None:
    path = create(app, "opus_echo", text=MARKUP, RUNID=MARKUP)
    doc = job_doc(app, path)
    assert doc.findtext("uws:runId", namespaces=NS) == MARKUP
    values = {p.get("id"): p.text for p in doc.iterfind("uws:parameters/uws:parameter", NS)}
    assert values["text"] == MARKUP
    parameters = etree.fromstring(app.get(f"{path}/parameters", status=200).body)
    assert {p.get("id"): p.text for p in parameters.iterfind("uws:parameter", NS)}["text"] == MARKUP
    listing = etree.fromstring(app.get("/rest/opus_echo", status=200).body)
    ref = listing.find(f"uws:jobref[@id='{job_id(path)}']", NS)
    assert ref is not None and ref.findtext("uws:runId", namespaces=NS) == MARKUP
    for document in (doc, parameters, listing):
        assert not [e for e in document.iter() if etree.QName(e).localname in ("script", "b")]
    assert app.get(f"{path}/parameters/text", status=200).text == MARKUP


def test_error_messages_are_one_line_whatever_they_name(app: webtest.TestApp) -> None:
    name = "bad\r\nX-Injected: 1"
    response = app.post("/rest/opus_echo", {"text": "t", name: "1"}, status="*")
    assert_bad(response, 400, "parameter bad\\r\\nX-Injected: 1", "unknown")
    assert response.text.count("\n") == 1 and "X-Injected" not in response.headers
    response = app.get("/rest/no_such%0D%0AX-Injected:%201", status="*")
    assert_bad(response, 404, "\\r\\n")
    assert response.text.count("\n") == 1 and "X-Injected" not in response.headers


@pytest.mark.parametrize(
    ("target", "words"),
    [
        ("/rest/hello/%ff%fe", "path is not UTF-8"),
        ("/rest/hel%ffl%fo", "path is not UTF-8"),
        ("/jdl/hello%c3%28", "path is not UTF-8"),
        ("/rest/hello?PHASE=%ff", "not UTF-8"),
        ("/rest/hello?%ff=1", "not UTF-8"),
        ("/provsap?ID=%ff", "not UTF-8"),
        ("/rest/hello?LAST=%C2%B2", "parameter LAST"),
        ("/rest/hello?LAST=%EF%BC%91", "parameter LAST"),
        ("/rest/hello?LAST=" + "9" * 5000, "parameter LAST"),
        ("/rest/hello?LAST=1e9", "parameter LAST"),
        ("/rest/hello?AFTER=" + "9" * 5000, "parameter AFTER"),
        ("/rest/hello?AFTER=9999-12-31T23:59:59-14:00", "parameter AFTER"),
        ("/provsap?ID=x&DEPTH=%C2%B2", "parameter DEPTH"),
        ("/provsap?ID=x&DEPTH=" + "9" * 5000, "parameter DEPTH"),
    ],
)
def test_unreadable_or_overflowing_requests_are_400(
    app: webtest.TestApp, target: str, words: str
) -> None:
    assert_bad(app.get(target, status="*"), 400, words)


def test_overflowing_numbers_in_job_requests_are_400_or_capped(app: webtest.TestApp) -> None:
    path = create(app, "sleeper")
    assert_bad(app.get(f"{path}?WAIT={'9' * 5000}", status="*"), 400, "parameter WAIT")
    response = app.post(f"{path}/executionduration", {"EXECUTIONDURATION": "9" * 5000}, status="*")
    assert_bad(response, 400, "parameter EXECUTIONDURATION")
    app.post(f"{path}/executionduration", {"EXECUTIONDURATION": "9" * 30}, status=303)
    assert app.get(f"{path}/executionduration", status=200).text == str(MAX_DURATION)
    for when in ("9999-12-31T23:59:59-14:00", "9" * 5000, "+99999-01-01"):
        response = app.post(f"{path}/destruction", {"DESTRUCTION": when}, status="*")
        assert_bad(response, 400, "parameter DESTRUCTION")
    response = app.post("/rest/opus_echo", {"text": "t", "count": "9" * 5000}, status="*")
    assert_bad(response, 400, "parameter count")


# -- job definitions and VOSI ---------------------------------------------------------------


def test_jdl_lists_definitions_and_the_invalid_one(app: webtest.TestApp) -> None:
    body = app.get("/jdl", status=200).json
    names = {d["name"] for d in body["jobdefs"]}
    assert {"hello", "opus_echo", "pysquare", "sleeper", "plots"} <= names
    assert "broken" not in names
    broken = [p for p in body["invalid"] if p["file"] == "broken_vot.xml"]
    assert broken, body["invalid"]
    assert "BASH_ENV" in broken[0]["field"] + broken[0]["reason"]
    assert_bad(app.get("/rest/broken", status="*"), 404)
    # a file name only: the server's folders are not shown
    assert "/" not in broken[0]["file"]


def test_jdl_definition_as_json_and_votable(app: webtest.TestApp) -> None:
    body = app.get("/jdl/opus_echo/json", status=200).json
    assert body["name"] == "opus_echo"
    params = {p["name"]: p for p in body["parameters"]}
    assert params["text"]["required"] is True
    assert params["count"]["kind"] == "integer" and params["count"]["max"] == "100"
    assert params["mode"]["options"] == ["plain", "fancy"]
    assert "source" not in body
    response = app.get("/jdl/opus_echo", status=200)
    assert "votable" in response.headers["Content-Type"]
    assert etree.QName(etree.fromstring(response.body)).localname == "VOTABLE"


def test_availability_says_the_executor_is_not_running(app: webtest.TestApp) -> None:
    response = app.get("/availability", status=200)
    doc = etree.fromstring(response.body)
    assert doc.findtext("{*}available") == "true"
    notes = [n.text or "" for n in doc.iterfind("{*}note")]
    assert any("embedded executor not running" in n for n in notes), notes
    assert any("broken_vot.xml" in n for n in notes), notes


# -- ProvSAP --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("", "ID"),
        ("?ID=%20", "ID"),
        (f"?ID={NO_SUCH_ID}&DEPTH=deep", "DEPTH"),
        (f"?ID={NO_SUCH_ID}&DEPTH=-1", "DEPTH"),
        (f"?ID={NO_SUCH_ID}&DIRECTION=SIDEWAYS", "DIRECTION"),
        (f"?ID={NO_SUCH_ID}&RESPONSEFORMAT=PDF", "RESPONSEFORMAT"),
        (f"?ID={NO_SUCH_ID}&MODEL=X", "MODEL"),
    ],
)
def test_provsap_bad_parameters_are_400(app: webtest.TestApp, query: str, name: str) -> None:
    assert_bad(app.get(f"/provsap{query}", status="*"), 400, f"parameter {name}")


def test_provsap_unknown_id_is_404(app: webtest.TestApp) -> None:
    assert_bad(app.get(f"/provsap?ID={NO_SUCH_ID}", status="*"), 404, NO_SUCH_ID)
    assert_bad(app.get("/provsap?ID=opus:nothing", status="*"), 404)
    # a job that has not run has no provenance yet
    path = create(app, "pysquare", x="1")
    assert_bad(app.get(f"{path}/provenance", status="*"), 404, "not run")

"""The UWS 1.1 REST contract, against a real `opus serve` (see DESIGN.md, HTTP contract)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from lxml import etree

from opus.store import schema
from tests.servers import Server, assert_valid, load_schema, require_shared

UWS_NS = "http://www.ivoa.net/xml/UWS/v1.0"
XLINK_NS = "http://www.w3.org/1999/xlink"
NS = {"uws": UWS_NS, "xlink": XLINK_NS}
U = f"{{{UWS_NS}}}"
HREF = f"{{{XLINK_NS}}}href"
NO_SUCH_ID = "0123456789abcdef"


# -- helpers --------------------------------------------------------------------------------


def get_doc(server: Server, url: str) -> etree._Element:
    response = server.session.get(url)
    assert response.status_code == 200, response.text
    return etree.fromstring(response.content)


def job_id_of(job_url: str) -> str:
    return job_url.rstrip("/").rsplit("/", 1)[-1]


def results_of(doc: etree._Element) -> dict[str, etree._Element]:
    return {r.get("id"): r for r in doc.iterfind("uws:results/uws:result", NS)}


def params_of(doc: etree._Element) -> dict[str, str]:
    return {p.get("id"): (p.text or "") for p in doc.iterfind("uws:parameters/uws:parameter", NS)}


def listed_ids(server: Server, jobdef: str, params: object = None) -> list[str]:
    response = server.session.get(server.rest(jobdef), params=params)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    doc = etree.fromstring(response.content)
    return [ref.get("id") for ref in doc.iterfind("uws:jobref", NS)]


def run_to_end(
    server: Server, jobdef: str, files: object = None, **params: object
) -> tuple[str, etree._Element]:
    url = server.create(jobdef, files=files, **params)
    return url, server.wait_final(url)


def download(server: Server, doc: etree._Element, result_id: str) -> bytes:
    result = results_of(doc)[result_id]
    response = server.session.get(result.get(HREF))
    assert response.status_code == 200, response.text
    return response.content


def assert_bad(response: requests.Response, status: int | tuple[int, ...], *words: str) -> None:
    """An error answer: the status, a text body naming what is wrong, never a traceback."""
    statuses = status if isinstance(status, tuple) else (status,)
    assert response.status_code in statuses, (response.status_code, response.text)
    assert response.headers["Content-Type"].startswith("text/plain"), response.headers
    assert "Traceback" not in response.text
    for word in words:
        assert word.lower() in response.text.lower(), (word, response.text)


def completed(doc: etree._Element) -> None:
    phase = doc.findtext("uws:phase", namespaces=NS)
    assert phase == "COMPLETED", (
        phase,
        doc.findtext("uws:errorSummary/uws:message", namespaces=NS),
    )


# -- creation and the life of a job ---------------------------------------------------------


def test_create_answers_303_to_the_job(server: Server) -> None:
    response = server.session.post(
        server.rest("hello"), data={"name": "Ada"}, allow_redirects=False
    )
    assert response.status_code == 303, response.text
    location = response.headers["Location"]
    assert location.startswith(server.rest("hello") + "/")
    doc = get_doc(server, location)
    assert doc.findtext("uws:jobId", namespaces=NS) == job_id_of(location)
    assert doc.findtext("uws:phase", namespaces=NS) == "PENDING"
    assert params_of(doc)["name"] == "Ada"


def test_phase_run_at_creation_queues_and_completes(server: Server) -> None:
    response = server.session.post(
        server.rest("hello"),
        data={"name": "Ada", "PHASE": "RUN", "RUNID": "my-run-7"},
        allow_redirects=False,
    )
    assert response.status_code == 303, response.text
    url = response.headers["Location"]
    first = server.phase(url)
    assert first in ("QUEUED", "EXECUTING", "COMPLETED"), first
    doc = server.wait_final(url)
    completed(doc)
    assert doc.findtext("uws:runId", namespaces=NS) == "my-run-7"
    result = results_of(doc)["greeting"]
    assert result.get("mime-type") == "text/plain"
    assert int(result.get("size")) == len(b"Hello, Ada!\n")
    assert download(server, doc, "greeting") == b"Hello, Ada!\n"
    # the results sub-resource and the result by its id
    results_doc = get_doc(server, f"{url}/results")
    assert [r.get("id") for r in results_doc.iterfind("uws:result", NS)] == ["greeting"]
    direct = server.session.get(f"{url}/results/greeting")
    assert direct.status_code == 200 and direct.content == b"Hello, Ada!\n"
    assert direct.headers["Content-Type"].startswith("text/plain")
    for field in ("startTime", "endTime"):
        assert doc.findtext(f"uws:{field}", namespaces=NS), field


# -- job list -------------------------------------------------------------------------------


def test_job_list_phase_filter_is_a_union(server: Server) -> None:
    pending = server.create("hello", run=False, name="p")
    done = server.create("hello", name="d")
    server.wait_final(done)
    aborted = server.create("hello", run=False, name="a")
    r = server.session.post(f"{aborted}/phase", data={"PHASE": "ABORT"}, allow_redirects=False)
    assert r.status_code == 303, r.text
    ids = {job_id_of(u): u for u in (pending, done, aborted)}

    only_pending = set(listed_ids(server, "hello", {"PHASE": "PENDING"}))
    assert job_id_of(pending) in only_pending
    assert not only_pending & {job_id_of(done), job_id_of(aborted)}

    both = set(listed_ids(server, "hello", [("PHASE", "PENDING"), ("PHASE", "COMPLETED")]))
    assert {job_id_of(pending), job_id_of(done)} <= both
    assert job_id_of(aborted) not in both

    everything = set(listed_ids(server, "hello"))
    assert set(ids) <= everything


def test_job_list_after_with_z_and_microseconds(server: Server) -> None:
    first = server.create("hello", run=False)
    time.sleep(0.05)
    second = server.create("hello", run=False)
    time.sleep(0.05)
    third = server.create("hello", run=False)
    created = get_doc(server, first).findtext("uws:creationTime", namespaces=NS)
    t1 = datetime.fromisoformat(created.replace("Z", "+00:00"))
    # 1 ms after the (millisecond) creation time of the first job: later than it, before the 2nd
    cut = (t1 + timedelta(milliseconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    after = set(listed_ids(server, "hello", {"AFTER": cut}))
    assert {job_id_of(second), job_id_of(third)} <= after
    assert job_id_of(first) not in after

    assert {job_id_of(u) for u in (first, second, third)} <= set(
        listed_ids(server, "hello", {"AFTER": "2000-01-01T00:00:00Z"})
    )
    assert listed_ids(server, "hello", {"AFTER": "2999-01-01T00:00:00Z"}) == []


def test_job_list_after_a_jobs_own_creation_time_excludes_it(server: Server) -> None:
    """A client that asks for the jobs AFTER the newest creationTime it has seen must not get
    that job again: AFTER compares with the creationTime the server publishes."""
    url = server.create("hello", run=False)
    created = get_doc(server, url).findtext("uws:creationTime", namespaces=NS)
    assert job_id_of(url) not in listed_ids(server, "hello", {"AFTER": created}), created


def test_job_list_last_gives_the_newest_first(server: Server) -> None:
    urls = []
    for _ in range(3):
        urls.append(server.create("hello", run=False))
        time.sleep(0.01)
    newest = [job_id_of(u) for u in reversed(urls)]
    assert listed_ids(server, "hello", {"LAST": "2"}) == newest[:2]
    assert set(listed_ids(server, "hello", {"LAST": "3"})) == set(newest)
    assert listed_ids(server, "hello", {"LAST": "0"}) == []


def test_job_list_filters_combine_with_and(server: Server) -> None:
    old_done = server.create("hello", name="o")
    server.wait_final(old_done)
    time.sleep(0.05)
    created = get_doc(server, old_done).findtext("uws:creationTime", namespaces=NS)
    cut = datetime.fromisoformat(created.replace("Z", "+00:00")) + timedelta(milliseconds=1)
    new_pending = server.create("hello", run=False)
    new_done = server.create("hello", name="n")
    server.wait_final(new_done)

    found = listed_ids(
        server,
        "hello",
        {"PHASE": "COMPLETED", "AFTER": cut.strftime("%Y-%m-%dT%H:%M:%S.%fZ")},
    )
    assert job_id_of(new_done) in found
    assert job_id_of(old_done) not in found  # COMPLETED but too old
    assert job_id_of(new_pending) not in found  # new but PENDING
    assert listed_ids(server, "hello", {"PHASE": "COMPLETED", "LAST": "1"}) == [job_id_of(new_done)]


def test_archived_jobs_are_not_listed_by_default(server: Server) -> None:
    url = server.create("hello", run=False)
    job_id = job_id_of(url)
    # No UWS request archives a job here (the destruction sweep may): set the phase in the store.
    changed = server.sql("UPDATE jobs SET phase = 'ARCHIVED' WHERE id = :id", {"id": job_id})
    assert changed == 1
    assert server.phase(url) == "ARCHIVED"
    assert job_id not in listed_ids(server, "hello")
    assert job_id in listed_ids(server, "hello", {"PHASE": "ARCHIVED"})


def test_job_list_of_unknown_jobdef_is_404(server: Server) -> None:
    assert_bad(server.session.get(server.rest("no_such_def")), 404)
    assert_bad(
        server.session.post(server.rest("no_such_def"), data={"x": "1"}, allow_redirects=False), 404
    )


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"LAST": "abc"}, "LAST"),
        ({"LAST": "-1"}, "LAST"),
        ({"AFTER": "garbage"}, "AFTER"),
        ({"AFTER": "2024-13-45T99:00:00Z"}, "AFTER"),
        ({"PHASE": "FOO"}, "PHASE"),
    ],
)
def test_job_list_bad_filters_are_400(server: Server, params: dict[str, str], name: str) -> None:
    assert_bad(server.session.get(server.rest("hello"), params=params), 400, name)


# -- schema validity ------------------------------------------------------------------------


def test_documents_validate_against_the_uws_schema(
    server: Server, uws_schema: etree.XMLSchema
) -> None:
    pending = server.create("hello", run=False, name="Schema")
    done_url, done = run_to_end(server, "hello", name="Valid")
    error_url, error = run_to_end(server, "failing", reason="schema")
    assert done.findtext("uws:phase", namespaces=NS) == "COMPLETED"
    assert error.findtext("uws:phase", namespaces=NS) == "ERROR"

    documents = {
        "list": server.rest("hello"),
        "list-filtered": f"{server.rest('hello')}?PHASE=COMPLETED&LAST=5",
        "empty list": f"{server.rest('hello')}?AFTER=2999-01-01T00:00:00Z",
        "pending": pending,
        "completed": done_url,
        "error": error_url,
        "results": f"{done_url}/results",
        "empty results": f"{pending}/results",
        "parameters": f"{done_url}/parameters",
    }
    for what, url in documents.items():
        response = server.session.get(url)
        assert response.status_code == 200, (what, response.text)
        assert "xml" in response.headers["Content-Type"], (what, response.headers)
        doc = assert_valid(uws_schema, response.content)
        assert doc.nsmap.get(doc.prefix) == UWS_NS, what
        if what in ("list", "list-filtered", "empty list", "pending", "completed", "error"):
            assert doc.get("version") == "1.1", what

    error_doc = get_doc(server, error_url)
    summary = error_doc.find("uws:errorSummary", NS)
    assert summary is not None and summary.get("type") in ("transient", "fatal")
    assert results_of(get_doc(server, done_url))["greeting"] is not None


# -- sub-resources --------------------------------------------------------------------------


def test_text_sub_resources(server: Server) -> None:
    url, doc = run_to_end(server, "hello", name="Text")
    for sub in ("phase", "executionduration", "destruction", "quote", "error", "owner"):
        response = server.session.get(f"{url}/{sub}")
        assert response.status_code == 200, (sub, response.text)
        assert response.headers["Content-Type"].startswith("text/plain"), (sub, response.headers)
    assert server.session.get(f"{url}/phase").text == "COMPLETED"
    assert server.session.get(f"{url}/executionduration").text == doc.findtext(
        "uws:executionDuration", namespaces=NS
    )
    assert server.session.get(f"{url}/destruction").text == doc.findtext(
        "uws:destruction", namespaces=NS
    )
    assert server.session.get(f"{url}/error").text == ""


def test_execution_duration_is_capped_by_the_server(start_server: Callable[..., Server]) -> None:
    own = start_server({"OPUS_MAX_EXECUTION_DURATION": "100"})
    url = own.create("hello", run=False)
    assert own.session.get(f"{url}/executionduration").text == "60"  # the definition's value
    for asked, kept in (("50", "50"), ("0", "100"), ("10000", "100"), ("50", "50")):
        response = own.session.post(
            f"{url}/executionduration", data={"EXECUTIONDURATION": asked}, allow_redirects=False
        )
        assert response.status_code == 303, response.text
        assert response.headers["Location"] == url
        assert own.session.get(f"{url}/executionduration").text == kept, asked
        assert get_doc(own, url).findtext("uws:executionDuration", namespaces=NS) == kept
    at_creation = own.create("hello", run=False, EXECUTIONDURATION="10000")
    assert own.session.get(f"{at_creation}/executionduration").text == "100"
    for bad in ("abc", "-5"):
        assert_bad(
            own.session.post(
                f"{url}/executionduration", data={"EXECUTIONDURATION": bad}, allow_redirects=False
            ),
            400,
            "EXECUTIONDURATION",
        )


def test_destruction_can_be_set_and_is_capped(server: Server) -> None:
    url = server.create("hello", run=False)
    wanted = datetime.now(UTC).replace(tzinfo=None, microsecond=123456) + timedelta(days=3)
    response = server.session.post(
        f"{url}/destruction",
        data={"DESTRUCTION": wanted.strftime("%Y-%m-%dT%H:%M:%S.%fZ")},
        allow_redirects=False,
    )
    assert response.status_code == 303, response.text
    assert response.headers["Location"] == url
    kept = server.session.get(f"{url}/destruction").text
    assert kept == wanted.isoformat(timespec="milliseconds") + "Z"
    assert get_doc(server, url).findtext("uws:destruction", namespaces=NS) == kept

    response = server.session.post(
        f"{url}/destruction", data={"DESTRUCTION": "2999-01-01T00:00:00Z"}, allow_redirects=False
    )
    assert response.status_code == 303, response.text
    capped = datetime.fromisoformat(server.session.get(f"{url}/destruction").text.replace("Z", ""))
    limit = datetime.now(UTC).replace(tzinfo=None) + timedelta(days=365)
    assert abs((capped - limit).total_seconds()) < 120, capped

    assert_bad(
        server.session.post(
            f"{url}/destruction", data={"DESTRUCTION": "next tuesday"}, allow_redirects=False
        ),
        400,
        "DESTRUCTION",
    )


# -- parameters -----------------------------------------------------------------------------


def test_parameters_change_while_pending(server: Server) -> None:
    url = server.create("hello", run=False, name="First")
    assert server.session.get(f"{url}/parameters/name").text == "First"

    response = server.session.post(
        f"{url}/parameters", data={"name": "Second"}, allow_redirects=False
    )
    assert response.status_code == 303 and response.headers["Location"] == url, response.text
    assert server.session.get(f"{url}/parameters/name").text == "Second"

    response = server.session.post(url, data={"name": "Third"}, allow_redirects=False)
    assert response.status_code == 303 and response.headers["Location"] == url, response.text
    assert server.session.get(f"{url}/parameters/name").text == "Third"

    response = server.session.put(f"{url}/parameters/name", data=b"Fourth", allow_redirects=False)
    assert response.status_code == 303, response.text
    got = server.session.get(f"{url}/parameters/name")
    assert got.status_code == 200 and got.text == "Fourth"
    assert got.headers["Content-Type"].startswith("text/plain")
    assert params_of(get_doc(server, url))["name"] == "Fourth"

    response = server.session.post(f"{url}/phase", data={"PHASE": "RUN"}, allow_redirects=False)
    assert response.status_code == 303, response.text
    doc = server.wait_final(url)
    completed(doc)
    assert download(server, doc, "greeting") == b"Hello, Fourth!\n"


def test_parameters_document_lists_the_values(server: Server) -> None:
    url = server.create("hello", run=False, name="Doc")
    doc = get_doc(server, f"{url}/parameters")
    assert etree.QName(doc).localname == "parameters"
    assert {p.get("id"): p.text for p in doc.iterfind("uws:parameter", NS)} == {"name": "Doc"}
    assert_bad(server.session.get(f"{url}/parameters/nothing"), 404)


def test_parameters_are_refused_after_run(server: Server) -> None:
    url, _ = run_to_end(server, "hello", name="Done")
    for response in (
        server.session.post(f"{url}/parameters", data={"name": "Late"}, allow_redirects=False),
        server.session.post(url, data={"name": "Late"}, allow_redirects=False),
        server.session.put(f"{url}/parameters/name", data=b"Late", allow_redirects=False),
    ):
        assert_bad(response, (403, 409), "COMPLETED")
    assert server.session.get(f"{url}/parameters/name").text == "Done"


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "name", "reason"),
    [
        ({"text": "t", "bogus": "1"}, "bogus", "unknown"),
        ({"text": "t", "count": "abc"}, "count", "integer"),
        ({"text": "t", "count": "2.5"}, "count", "integer"),
        ({"text": "t", "count": "0"}, "count", "minimum"),
        ({"text": "t", "count": "101"}, "count", "maximum"),
        ({"text": "t", "mode": "wild"}, "mode", "one of"),
        ({"text": "t", "ratio": "1.5"}, "ratio", "maximum"),
        ({"text": "t", "ratio": "-0.1"}, "ratio", "minimum"),
        ({"text": "t", "ratio": "nan"}, "ratio", "number"),
        ({"text": "t", "flag": "maybe"}, "flag", "boolean"),
    ],
)
def test_bad_parameter_values_are_400(
    server: Server, params: dict[str, str], name: str, reason: str
) -> None:
    before = listed_ids(server, "opus_echo")
    for run in (True, False):
        data = dict(params) | ({"PHASE": "RUN"} if run else {})
        response = server.session.post(server.rest("opus_echo"), data=data, allow_redirects=False)
        assert_bad(response, 400, name, reason)
    assert listed_ids(server, "opus_echo") == before
    # the same values refused on an existing PENDING job
    url = server.create("opus_echo", run=False, text="ok")
    bad = {k: v for k, v in params.items() if k != "text"}
    assert_bad(
        server.session.post(f"{url}/parameters", data=bad, allow_redirects=False), 400, name, reason
    )


def test_good_parameter_values_are_accepted(server: Server) -> None:
    _url, doc = run_to_end(
        server, "opus_echo", text="hi there", count="3", mode="fancy", ratio="0.5", flag="yes"
    )
    completed(doc)
    assert download(server, doc, "output") == b"hi there\n" * 3
    values = params_of(doc)
    assert values["count"] == "3" and values["mode"] == "fancy" and values["flag"] == "true"


def test_missing_required_parameter_creates_no_job(server: Server) -> None:
    before = listed_ids(server, "opus_echo")
    response = server.session.post(
        server.rest("opus_echo"), data={"count": "2", "PHASE": "RUN"}, allow_redirects=False
    )
    assert_bad(response, 400, "text", "required")
    assert listed_ids(server, "opus_echo") == before
    # PENDING without it is allowed, but RUN is then refused
    url = server.create("opus_echo", run=False, count="2")
    assert_bad(
        server.session.post(f"{url}/phase", data={"PHASE": "RUN"}, allow_redirects=False),
        400,
        "text",
    )
    assert server.phase(url) == "PENDING"


def test_bad_phase_and_action_are_400(server: Server) -> None:
    before = listed_ids(server, "hello")
    assert_bad(
        server.session.post(server.rest("hello"), data={"PHASE": "FOO"}, allow_redirects=False),
        400,
        "PHASE",
    )
    assert listed_ids(server, "hello") == before
    url = server.create("hello", run=False)
    assert_bad(
        server.session.post(f"{url}/phase", data={"PHASE": "FOO"}, allow_redirects=False),
        400,
        "PHASE",
    )
    assert_bad(server.session.post(url, data={"PHASE": "FOO"}, allow_redirects=False), 400, "PHASE")
    assert_bad(
        server.session.post(url, data={"ACTION": "FOO"}, allow_redirects=False), 400, "ACTION"
    )
    assert_bad(server.session.post(f"{url}/phase", data={}, allow_redirects=False), 400, "PHASE")
    assert server.phase(url) == "PENDING"


def test_unknown_job_and_result_are_404(server: Server) -> None:
    url, _ = run_to_end(server, "hello")
    for missing in (
        f"{server.rest('hello')}/{NO_SUCH_ID}",
        f"{server.rest('hello')}/not-an-id",
        f"{server.rest('hello')}/{NO_SUCH_ID}/phase",
        f"{server.rest('hello')}/{NO_SUCH_ID}/results",
        f"{server.rest('hello')}/{NO_SUCH_ID}/parameters",
        f"{server.rest('pysquare')}/{job_id_of(url)}",  # a job of another definition
        f"{url}/results/nothing",
        f"{url}/results/greeting.txt",
        f"{server.url}/store/{NO_SUCH_ID}",
        f"{server.url}/jdl/no_such_def",
    ):
        assert_bad(server.session.get(missing), 404)
    assert_bad(
        server.session.delete(f"{server.rest('hello')}/{NO_SUCH_ID}", allow_redirects=False), 404
    )
    assert_bad(
        server.session.post(
            f"{server.rest('hello')}/{NO_SUCH_ID}/phase",
            data={"PHASE": "RUN"},
            allow_redirects=False,
        ),
        404,
    )


# -- deletion, abort, run ------------------------------------------------------------------


def test_delete_redirects_to_the_list(server: Server) -> None:
    url, _ = run_to_end(server, "hello")
    response = server.session.delete(url, allow_redirects=False)
    assert response.status_code == 303, response.text
    assert response.headers["Location"] == server.rest("hello")
    assert_bad(server.session.get(url), 404)
    assert_bad(server.session.get(f"{url}/results/greeting"), 404)
    assert job_id_of(url) not in listed_ids(server, "hello")


def test_post_action_delete_redirects_to_the_list(server: Server) -> None:
    url = server.create("hello", run=False)
    response = server.session.post(url, data={"ACTION": "DELETE"}, allow_redirects=False)
    assert response.status_code == 303, response.text
    assert response.headers["Location"] == server.rest("hello")
    assert_bad(server.session.get(url), 404)
    assert job_id_of(url) not in listed_ids(server, "hello")


def test_abort_a_pending_job(server: Server) -> None:
    url = server.create("hello", run=False)
    response = server.session.post(f"{url}/phase", data={"PHASE": "ABORT"}, allow_redirects=False)
    assert response.status_code == 303 and response.headers["Location"] == url, response.text
    assert server.phase(url) == "ABORTED"
    # an aborted job does not run
    assert_bad(
        server.session.post(f"{url}/phase", data={"PHASE": "RUN"}, allow_redirects=False),
        (403, 409),
    )
    assert server.phase(url) == "ABORTED"


def test_run_of_a_completed_job_is_refused(server: Server) -> None:
    url, _ = run_to_end(server, "hello")
    response = server.session.post(f"{url}/phase", data={"PHASE": "RUN"}, allow_redirects=False)
    assert_bad(response, 403, "COMPLETED")
    assert server.phase(url) == "COMPLETED"


def test_failing_job_ends_in_error_with_its_stderr(server: Server) -> None:
    url, doc = run_to_end(server, "failing", reason="the moon is full")
    assert doc.findtext("uws:phase", namespaces=NS) == "ERROR"
    message = doc.findtext("uws:errorSummary/uws:message", namespaces=NS)
    assert "cannot work: the moon is full" in message
    error = server.session.get(f"{url}/error")
    assert error.status_code == 200
    assert "cannot work: the moon is full" in error.text
    assert results_of(doc) == {}


# -- values are data, never code ------------------------------------------------------------


def test_script_parameter_is_never_shell_code(server: Server, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    name = f'x"; touch {marker}; echo "'
    for value in (name, f"$(touch {marker})", f"`touch {marker}`", f"a' ; touch {marker} ; '"):
        _url, doc = run_to_end(server, "hello", name=value)
        completed(doc)
        assert download(server, doc, "greeting") == f"Hello, {value}!\n".encode()
    assert not marker.exists()


def test_command_argument_is_one_argv_element(server: Server, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    word = f"a b; touch {marker} && $(touch {marker}) `touch {marker}` $HOME * | cat"
    _url, doc = run_to_end(server, "argv", word=word)
    completed(doc)
    assert json.loads(download(server, doc, "args")) == [word, "--", word]
    assert results_of(doc)["args"].get("mime-type") == "application/json"
    assert not marker.exists()


# -- inputs: uploads, stored entities, results of other jobs --------------------------------


def test_upload_a_file_as_input(server: Server) -> None:
    content = b"first line\nsecond line\n"
    _url, doc = run_to_end(
        server,
        "opus_append",
        text="appended",
        files={"input": ("my input.txt", content, "text/plain")},
    )
    completed(doc)
    assert download(server, doc, "output") == content + b"appended\n"
    # the upload is a stored entity, named in the parameters by reference
    param = doc.find("uws:parameters/uws:parameter[@id='input']", NS)
    assert param is not None and param.get("byReference") == "true"
    assert param.text.startswith("opus:ent_")
    stored = server.session.get(f"{server.url}/store/{param.text.removeprefix('opus:ent_')}")
    assert stored.status_code == 200 and stored.content == content


def test_upload_several_files_for_multiplicity_star(server: Server) -> None:
    files = [
        ("inputs", ("a.txt", b"AAA\n", "text/plain")),
        ("inputs", ("b.txt", b"BBB\n", "text/plain")),
    ]
    _url, doc = run_to_end(server, "concat", files=files)
    completed(doc)
    assert download(server, doc, "all") == b"AAA\nBBB\n"


def test_upload_more_files_than_multiplicity_is_400(server: Server) -> None:
    files = [("input", ("a.txt", b"A\n")), ("input", ("b.txt", b"B\n"))]
    response = server.session.post(
        server.rest("opus_append"), data={"PHASE": "RUN"}, files=files, allow_redirects=False
    )
    assert_bad(response, 400, "input")


def test_result_of_one_job_is_input_of_the_next(server: Server) -> None:
    _, first = run_to_end(server, "hello", name="Chain")
    completed(first)
    href = results_of(first)["greeting"].get(HREF)

    _url, second = run_to_end(server, "opus_append", input=href, text="and more")
    completed(second)
    assert download(server, second, "output") == b"Hello, Chain!\nand more\n"

    # the input is the stored entity of the first job's result, reachable by its id
    param = second.find("uws:parameters/uws:parameter[@id='input']", NS)
    assert param is not None and param.text.startswith("opus:ent_"), (
        param.text if param is not None else None
    )
    entity = param.text.removeprefix("opus:ent_")
    stored = server.session.get(f"{server.url}/store/{entity}")
    assert stored.status_code == 200 and stored.content == b"Hello, Chain!\n"

    _, third = run_to_end(server, "opus_append", input=f"opus:ent_{entity}", text="again")
    completed(third)
    assert download(server, third, "output") == b"Hello, Chain!\nagain\n"


@pytest.mark.parametrize("value", [f"opus:ent_{NO_SUCH_ID}", NO_SUCH_ID, "not an id at all"])
def test_unknown_entity_as_input_is_400(server: Server, value: str) -> None:
    before = listed_ids(server, "opus_append")
    response = server.session.post(
        server.rest("opus_append"), data={"input": value, "PHASE": "RUN"}, allow_redirects=False
    )
    assert_bad(response, 400, "input")
    assert listed_ids(server, "opus_append") == before


def test_result_url_of_a_missing_result_is_400(server: Server) -> None:
    url, _ = run_to_end(server, "hello")
    response = server.session.post(
        server.rest("opus_append"),
        data={"input": f"{url}/results/nothing", "PHASE": "RUN"},
        allow_redirects=False,
    )
    assert_bad(response, 400, "input")


# -- kinds of execution and results ---------------------------------------------------------


def test_results_matched_by_a_pattern(server: Server) -> None:
    """The script also makes a plot_*.csv in $TMPDIR: it must not be taken as a result."""
    _url, doc = run_to_end(server, "plots", n="3")
    completed(doc)
    results = results_of(doc)
    assert sorted(results) == ["plot_1.csv", "plot_2.csv", "plot_3.csv"]
    for i in (1, 2, 3):
        assert results[f"plot_{i}.csv"].get("mime-type") == "text/csv"
        assert download(server, doc, f"plot_{i}.csv") == f"{i}\n".encode()


def test_python_callable(server: Server) -> None:
    _url, doc = run_to_end(server, "pysquare", x="7")
    completed(doc)
    assert download(server, doc, "square") == b"sq 49 int\n"


def test_command_argv(server: Server) -> None:
    _url, doc = run_to_end(server, "argv")
    completed(doc)
    assert json.loads(download(server, doc, "args")) == ["plain", "--", "plain"]


# -- job definitions and VOSI ---------------------------------------------------------------


def test_jdl_list_reports_the_invalid_definition(server: Server) -> None:
    response = server.session.get(f"{server.url}/jdl")
    assert response.status_code == 200
    body = response.json()
    names = {d["name"] for d in body["jobdefs"]}
    assert {"hello", "opus_echo", "opus_append", "argv", "plots", "pysquare", "failing"} <= names
    assert "broken" not in names
    broken = [p for p in body["invalid"] if p["file"] == "broken_vot.xml"]
    assert broken, body["invalid"]
    assert "BASH_ENV" in broken[0]["field"] + broken[0]["reason"]
    assert broken[0]["field"]
    assert_bad(server.session.get(server.rest("broken")), 404)


def test_jdl_definition_as_votable_and_json(server: Server) -> None:
    response = server.session.get(f"{server.url}/jdl/hello")
    assert response.status_code == 200
    assert "votable" in response.headers["Content-Type"]
    doc = etree.fromstring(response.content)
    assert etree.QName(doc).localname == "VOTABLE"
    assert doc.find(".//{*}RESOURCE").get("name") == "hello"

    response = server.session.get(f"{server.url}/jdl/hello/json")
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "hello"
    assert "name" in [p["name"] for p in body["parameters"]]


def test_vosi_availability_and_capabilities(server: Server) -> None:
    availability = server.session.get(f"{server.url}/availability")
    assert availability.status_code == 200
    doc = assert_valid(load_schema("VOSIAvailability-v1.0.xsd"), availability.content)
    assert doc.findtext("{*}available") == "true"

    capabilities = server.session.get(f"{server.url}/capabilities")
    assert capabilities.status_code == 200
    doc = assert_valid(capabilities_schema(), capabilities.content)
    urls = [u.text for u in doc.iter("accessURL")]
    assert server.rest("hello") in urls
    assert f"{server.url}/availability" in urls


class _NamespaceUrlResolver(etree.Resolver):
    """Like the resolver of tests.servers, and also maps namespace-style schema locations
    (http://www.ivoa.net/xml/VOResource/v1.0 -> VOResource-v1.0.xsd), which the
    VOSICapabilities schema uses and load_schema cannot resolve."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    def resolve(self, url: str, pubid: str, context: object) -> object:
        parts = url.rstrip("/").rsplit("/", 2)
        for name in (parts[-1], f"{parts[-2]}-{parts[-1]}.xsd"):
            if (self.folder / name).is_file():
                return self.resolve_filename(str(self.folder / name), context)
        return None


def capabilities_schema() -> etree.XMLSchema:
    """VOSICapabilities with VODataService (for the vs:ParamHTTP interfaces)."""
    folder = require_shared("xsd")
    parser = etree.XMLParser()
    parser.resolvers.add(_NamespaceUrlResolver(folder))
    wrapper = (
        '<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">'
        '<xs:import namespace="http://www.ivoa.net/xml/VOSICapabilities/v1.0"'
        ' schemaLocation="VOSICapabilities-v1.0.xsd"/>'
        '<xs:import namespace="http://www.ivoa.net/xml/VODataService/v1.1"'
        ' schemaLocation="VODataService-v1.1.xsd"/>'
        "</xs:schema>"
    )
    return etree.XMLSchema(etree.fromstring(wrapper.encode(), parser, base_url=f"{folder}/"))


def test_a_very_long_list_redirects_to_last(start_server: Callable[..., Server]) -> None:
    """UWS 1.1: a server may answer 303 to the list with a LAST filter when it is too long."""
    own = start_server()
    template = own.create("hello", run=False)
    columns = ", ".join(c.name for c in schema.jobs.columns if c.name != "id")
    own.sql(
        f"INSERT INTO jobs (id, {columns}) SELECT :copy, {columns} FROM jobs WHERE id = :id",
        [{"copy": f"{i:016x}", "id": job_id_of(template)} for i in range(10_000)],
    )
    response = own.session.get(
        own.rest("hello"), params={"PHASE": "PENDING"}, allow_redirects=False
    )
    assert response.status_code == 303
    assert response.headers["Location"].endswith("?PHASE=PENDING&LAST=10000")
    followed = own.session.get(response.headers["Location"])
    assert followed.status_code == 200
    assert followed.content.count(b"<uws:jobref ") == 10_000


def test_a_very_long_upload_file_name_is_shortened(server: Server) -> None:
    name = "n" * 300 + ".txt"
    url = server.create("opus_append", files={"input": (name, b"long\n")}, text="x")
    doc = server.wait_final(url)
    assert doc.findtext(f"{{{UWS_NS}}}phase") == "COMPLETED"
    assert server.session.get(f"{url}/results/output").text == "long\nx\n"

"""Jobs made by jobs, on the test definitions: a chunked job (linecount, two files a
chunk) and a pipeline (naps: two sleeper steps). Chunks run as child jobs and their
results are merged; a failing chunk fails its parent, naming it; aborting a parent
aborts its children; a parent waits holding no runner; its provenance used its
children's results."""

from __future__ import annotations

import csv
import io
import time

from lxml import etree

from tests.servers import Server

UWS = "{http://www.ivoa.net/xml/UWS/v1.0}"


def children_of(server: Server, jobdef: str, label: str) -> list[tuple[str, str]]:
    """(run id, phase) of the jobs of `jobdef` whose run id starts with `label`."""
    doc = server.session.get(server.rest(jobdef)).text
    refs = etree.fromstring(doc.encode()).iter(f"{UWS}jobref")
    found = [(r.findtext(f"{UWS}runId") or "", r.findtext(f"{UWS}phase") or "") for r in refs]
    return sorted(f for f in found if f[0].startswith(label))


def parts(*texts: str) -> list[tuple[str, tuple[str, bytes]]]:
    return [("parts", (f"part{i}.txt", text.encode())) for i, text in enumerate(texts)]


def test_chunks_run_as_children_and_their_results_are_merged(server: Server) -> None:
    texts = ["a\n", "a\nb\n", "a\nb\nc\n", "x\n", "y\ny\n"]
    job = server.create("linecount", RUNID="lines-5", files=parts(*texts))
    doc = server.wait_final(job)
    assert doc.findtext(f"{UWS}phase") == "COMPLETED"
    rows = list(csv.DictReader(io.StringIO(server.session.get(f"{job}/results/counts").text)))
    assert sorted(int(r["lines"]) for r in rows) == sorted(len(t.splitlines()) for t in texts)
    chunks = children_of(server, "linecount", "lines-5 chunk")
    assert chunks == [(f"lines-5 chunk {i}/3", "COMPLETED") for i in (1, 2, 3)]
    prov = server.session.get(f"{job}/provenance").json()
    roles = [u["prov:role"] for u in prov["used"].values()]
    assert roles.count("chunk_counts") == 3 and roles.count("parts") == 5
    assert "merged from 3 chunks" in next(iter(prov["activity"].values()))["voprov:comment"]


def test_few_inputs_make_no_chunks(server: Server) -> None:
    job = server.create("linecount", RUNID="lines-2", files=parts("a\n", "b\n"))
    assert server.wait_final(job).findtext(f"{UWS}phase") == "COMPLETED"
    assert children_of(server, "linecount", "lines-2 chunk") == []


def test_a_failing_chunk_fails_its_parent_naming_it(server: Server) -> None:
    job = server.create("linecount", RUNID="lines-bad", files=parts("a\n", "b\n", "fail\n"))
    doc = server.wait_final(job)
    assert doc.findtext(f"{UWS}phase") == "ERROR"
    message = doc.findtext(f"{UWS}errorSummary/{UWS}message") or ""
    assert "lines-bad chunk 2/2 ended in ERROR" in message
    assert "says fail" in message


def test_a_pipeline_runs_its_steps_in_order(server: Server) -> None:
    job = server.create("naps", RUNID="naps-ok")
    doc = server.wait_final(job)
    assert doc.findtext(f"{UWS}phase") == "COMPLETED"
    steps = children_of(server, "sleeper", "naps-ok/")
    assert steps == [("naps-ok/first", "COMPLETED"), ("naps-ok/second", "COMPLETED")]
    assert server.session.get(f"{job}/results/done").text == "slept\n"


def test_aborting_a_pipeline_aborts_its_running_step(server: Server) -> None:
    job = server.create("naps", RUNID="naps-abort", seconds="20")
    deadline = time.monotonic() + 20
    while children_of(server, "sleeper", "naps-abort/") != [("naps-abort/first", "EXECUTING")]:
        assert time.monotonic() < deadline, children_of(server, "sleeper", "naps-abort/")
        time.sleep(0.1)
    answer = server.session.post(f"{job}/phase", data={"PHASE": "ABORT"}, allow_redirects=False)
    assert answer.status_code == 303
    assert server.wait_final(job).findtext(f"{UWS}phase") == "ABORTED"
    time.sleep(1)  # the step's runner sees the abort and stops its process
    assert children_of(server, "sleeper", "naps-abort/") == [("naps-abort/first", "ABORTED")]

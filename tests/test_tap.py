"""ProvTAP end to end: a real server with real jobs in chains (results used as inputs,
a fan-out, a fan-in), queried by taplint, pyvo, `stilts tapquery` and plain HTTP.

The lineage functions are checked against ProvSAP's answers for the same ids; the
visibility rule against a server with users; the examples page by running every query
it shows.
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from astropy.io.votable import parse_single_table
from lxml import etree

from opus.ids import namespace_uri
from tests.servers import IN_CI, Server, assert_valid, have, launch, load_schema, require_shared
from tests.test_identities import opus
from tests.test_provenance import result_entity
from tests.test_uws_api import _NamespaceUrlResolver

pyvo = pytest.importorskip("pyvo")
from pyvo.dal import DALQueryError, TAPService  # noqa: E402

VOTABLE = "{http://www.ivoa.net/xml/VOTable/v1.3}"
UWS = "{http://www.ivoa.net/xml/UWS/v1.0}"


@dataclass
class Graph:
    """Jobs in a lineage graph: a and b say hello; c1 and c2 append to a's greeting (a
    fan-out); d concatenates c1's, c2's and b's results (a fan-in); e appends to d's."""

    jobs: dict[str, str]  # name -> job URL
    results: dict[str, str]  # name -> qualified id of its result entity


def run(server: Server, jobdef: str, **params: object) -> str:
    url = server.create(jobdef, **params)
    assert server.wait_final(url).findtext(f"{UWS}phase") == "COMPLETED"
    return url


@pytest.fixture(scope="module")
def graph(server: Server) -> Graph:
    jobs: dict[str, str] = {}
    jobs["a"] = run(server, "hello", name="TAP a")
    jobs["b"] = run(server, "hello", name="TAP b")
    for n in ("c1", "c2"):
        jobs[n] = run(server, "opus_append", input=f"{jobs['a']}/results/greeting", text=n)
    inputs = [f"{jobs['c1']}/results/output", f"{jobs['c2']}/results/output"]
    inputs.append(f"{jobs['b']}/results/greeting")
    jobs["d"] = run(server, "concat", inputs=inputs)
    jobs["e"] = run(server, "opus_append", input=f"{jobs['d']}/results/all", text="e")
    return Graph(jobs, {n: result_entity(server, u) for n, u in jobs.items()})


def uri(server: Server, qname: str) -> str:
    return namespace_uri(server.url) + qname.removeprefix("opus:")


def sync(server: Server, query: str, **params: str) -> requests.Response:
    data = {"LANG": "ADQL", "QUERY": query, **params}
    response = server.session.post(f"{server.url}/tap/sync", data=data)
    assert response.status_code == 200, response.text
    return response


def rows(server: Server, query: str, **params: str) -> list[dict[str, object]]:
    table = parse_single_table(io.BytesIO(sync(server, query, **params).content)).to_table()
    return [dict(zip(table.colnames, (_plain(v) for v in row), strict=True)) for row in table]


def _plain(value: object) -> object:
    if hasattr(value, "item"):
        value = value.item()  # type: ignore[union-attr]
    return value.decode() if isinstance(value, bytes) else value


def error_of(response: requests.Response) -> str:
    doc = etree.fromstring(response.content)
    info = doc.find(f".//{VOTABLE}INFO[@name='QUERY_STATUS']")
    assert info is not None and info.get("value") == "ERROR", response.text
    return (info.text or "").strip()


def provsap_ids(server: Server, qname: str, direction: str) -> set[str]:
    """The jobs and files a ProvSAP walk reaches, as the URIs TAP shows."""
    response = server.session.get(
        f"{server.url}/provsap",
        params={"ID": qname, "DEPTH": "ALL", "DIRECTION": direction, "AGENT": "NO"},
    )
    assert response.status_code == 200, response.text
    doc = response.json()
    ids = set(doc.get("activity", {})) | set(doc.get("entity", {}))
    # the walk's nodes: jobs and files (not the descriptions, parameters, contexts shown)
    node = re.compile(r"^opus:(job|ent)_[0-9a-f]{16}$")
    return {uri(server, i) for i in ids if node.match(i)}


# -- validators and clients ------------------------------------------------------------------


def test_taplint_reports_no_error_and_no_warning(server: Server, graph: Graph) -> None:
    """Every stage, UPL and EXA included (DaCHS 2.7 scores 0 errors, 10 warnings)."""
    stilts = have("stilts")
    result = subprocess.run(
        [stilts, "taplint", f"tapurl={server.url}/tap", "report=EWF", "maxrepeat=20"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    lines = result.stdout.splitlines()
    problems = [line for line in lines if re.match(r"^[EW]-", line)]
    assert not problems, "\n".join(problems[:60])
    # The only failure is of the ObsLocTAP stage, which runs on every service and finds
    # no ivoa.obsplan table: provenance has no observation plans.
    failures = [line for line in lines if line.startswith("F-")]
    assert all(line.startswith("F-LOC-NOTP") for line in failures), failures
    stages_run = {m.group(1) for line in lines if (m := re.match(r"^Section (\w+):", line))}
    assert {"TMV", "CAP", "AVV", "QGE", "UWS", "UPL", "EXA"} <= stages_run, result.stdout[-3000:]


def schemas(*imports: tuple[str, str]) -> etree.XMLSchema:
    """The IVOA schemas of these (namespace, file) together, locations mapped to the files."""
    folder = require_shared("xsd")
    parser = etree.XMLParser()
    parser.resolvers.add(_NamespaceUrlResolver(folder))
    wrapper = (
        '<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">'
        + "".join(f'<xs:import namespace="{n}" schemaLocation="{f}"/>' for n, f in imports)
        + "</xs:schema>"
    )
    return etree.XMLSchema(etree.fromstring(wrapper.encode(), parser, base_url=f"{folder}/"))


VODATASERVICE = ("http://www.ivoa.net/xml/VODataService/v1.1", "VODataService-v1.1.xsd")


def test_capabilities_and_tables_validate_against_their_schemas(server: Server) -> None:
    response = requests.get(f"{server.url}/tap/capabilities", timeout=30)
    capabilities = schemas(
        ("http://www.ivoa.net/xml/VOSICapabilities/v1.0", "VOSICapabilities-v1.0.xsd"),
        VODATASERVICE,
        ("http://www.ivoa.net/xml/TAPRegExt/v1.0", "TAPRegExt-v1.0-Erratum1.xsd"),
    )
    doc = assert_valid(capabilities, response.content)
    forms = [f.text for f in doc.iter("form")]
    assert any(f and f.startswith("find_prov_precursors(") for f in forms)
    tables = schemas(
        ("http://www.ivoa.net/xml/VOSITables/v1.0", "VOSITables-v1.1.xsd"), VODATASERVICE
    )
    for detail in ("max", "min"):
        found = requests.get(f"{server.url}/tap/tables", params={"detail": detail}, timeout=30)
        assert_valid(tables, found.content)
    one = requests.get(f"{server.url}/tap/tables/provenance.entity", timeout=30)
    table = assert_valid(tables, one.content)
    assert table.findtext("name") == "provenance.entity"
    assert "generatedAtTime" in [c.findtext("name") for c in table.iter("column")]


def test_pyvo_runs_sync_async_and_reads_tables_and_limits(server: Server, graph: Graph) -> None:
    service = TAPService(f"{server.url}/tap")
    names = {t.name for t in service.tables}
    assert {"provenance.entity", "provenance.activity", "tap_schema.columns"} <= names
    assert service.maxrec == 10_000 and service.hardlimit == 1_000_000
    query = "SELECT id, name FROM provenance.activity WHERE name LIKE 'opus_append%'"
    found = {str(r["id"]) for r in service.run_sync(query)}
    wanted = {
        uri(server, f"opus:job_{graph.jobs[n].rsplit('/', 1)[-1]}") for n in ("c1", "c2", "e")
    }
    assert wanted <= found
    assert {str(r["id"]) for r in service.run_async(query)} == found
    with pytest.raises(DALQueryError, match="no_such_column"):
        service.run_sync("SELECT no_such_column FROM provenance.entity")


def test_pyvo_uploads_a_table_and_joins_it(server: Server, graph: Graph, tmp_path: Path) -> None:
    from astropy.table import Table

    mine = Table({"file": [uri(server, graph.results[n]) for n in ("a", "e")]})
    service = TAPService(f"{server.url}/tap")
    query = (
        "SELECT u.file, g.activity FROM TAP_UPLOAD.mine AS u "
        "JOIN provenance.wasgeneratedby AS g ON g.entity = u.file"
    )
    found = service.run_sync(query, uploads={"mine": mine})
    assert {str(r["file"]) for r in found} == set(mine["file"])
    lineage = (  # the lineage of these files, in one query
        "SELECT u.file, p.id FROM TAP_UPLOAD.mine AS u "
        "JOIN find_prov_precursors(u.file, 50) AS p ON p.origin = u.file"
    )
    walked: dict[str, set[str]] = {}
    for row in service.run_sync(lineage, uploads={"mine": mine}):
        walked.setdefault(str(row["file"]), set()).add(str(row["id"]))
    for name in ("a", "e"):
        start = graph.results[name]
        assert walked[uri(server, start)] == provsap_ids(server, start, "BACK") - {
            uri(server, start)
        }


def test_stilts_tapquery_sync_async_and_upload(
    server: Server, graph: Graph, tmp_path: Path
) -> None:
    stilts = have("stilts")
    query = "SELECT TOP 3 id, name FROM provenance.entity ORDER BY id"
    for mode in ("sync", "async"):
        out = tmp_path / f"{mode}.csv"
        subprocess.run(
            [
                stilts,
                "tapquery",
                f"tapurl={server.url}/tap",
                f"adql={query}",
                f"sync={mode == 'sync'}",
                f"out={out}",
                "ofmt=csv",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        assert len(list(csv.DictReader(out.open()))) == 3
    from astropy.table import Table

    upload = tmp_path / "ids.xml"
    Table({"file": [uri(server, graph.results["d"])]}).write(upload, format="votable")
    out = tmp_path / "upload.csv"
    subprocess.run(
        [
            stilts,
            "tapquery",
            f"tapurl={server.url}/tap",
            "nupload=1",
            f"upload1={upload}",
            "ufmt1=votable",
            "upname1=ids",
            "adql=SELECT e.id, e.name FROM TAP_UPLOAD.ids AS i "
            "JOIN provenance.entity AS e ON e.id = i.file",
            f"out={out}",
            "ofmt=csv",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert [r["name"] for r in csv.DictReader(out.open())] == ["all.txt"]


# -- lineage ---------------------------------------------------------------------------------


def test_precursors_equal_provsap_back(server: Server, graph: Graph) -> None:
    start = graph.results["e"]
    found = rows(
        server,
        "SELECT id, node_type, depth, relation "
        f"FROM find_prov_precursors('{uri(server, start)}', 50) AS p",
    )
    expected = provsap_ids(server, start, "BACK") - {uri(server, start)}
    assert {r["id"] for r in found} == expected
    depths = {r["id"]: r["depth"] for r in found}
    assert depths[uri(server, graph.results["a"])] == 6  # e <- d <- c1 <- a: 3 jobs back
    kinds = {r["node_type"] for r in found}
    assert kinds == {"entity", "activity"}


def test_descendants_equal_provsap_forth(server: Server, graph: Graph) -> None:
    start = graph.results["a"]
    found = rows(server, f"SELECT id FROM find_prov_descendants('{start}', 50) AS d")
    assert {r["id"] for r in found} == provsap_ids(server, start, "FORTH") - {uri(server, start)}
    redo = rows(
        server,
        "SELECT e.name FROM find_prov_descendants('" + uri(server, start) + "', 50) AS d "
        "JOIN provenance.entity AS e ON e.id = d.id WHERE d.node_type = 'entity'",
    )
    assert sorted(r["name"] for r in redo) == ["all.txt", "output.txt", "output.txt", "output.txt"]


def test_the_depth_bounds_the_walk(server: Server, graph: Graph) -> None:
    start = uri(server, graph.results["e"])
    one = rows(server, f"SELECT id, relation FROM find_prov_precursors('{start}', 1) AS p")
    assert [(r["id"], r["relation"]) for r in one] == [
        (uri(server, f"opus:job_{graph.jobs['e'].rsplit('/', 1)[-1]}"), "wasGeneratedBy")
    ]
    message = error_of(sync(server, f"SELECT * FROM find_prov_precursors('{start}', 5000) AS p"))
    assert "depth" in message and "1000" in message


# -- parameters, limits, formats -------------------------------------------------------------


def test_maxrec_overflow_is_exact(server: Server, graph: Graph) -> None:
    count = int(rows(server, "SELECT COUNT(*) AS n FROM provenance.entity")[0]["n"])  # type: ignore[call-overload]
    for maxrec, overflow in ((count, False), (count - 1, True), (0, True)):
        response = sync(server, "SELECT id FROM provenance.entity", MAXREC=str(maxrec))
        doc = etree.fromstring(response.content)
        statuses = [
            i.get("value") for i in doc.iter(f"{VOTABLE}INFO") if i.get("name") == "QUERY_STATUS"
        ]
        assert statuses == (["OK", "OVERFLOW"] if overflow else ["OK"]), (maxrec, statuses)
        table = parse_single_table(io.BytesIO(response.content))
        assert len(table.array) == min(maxrec, count)


def test_parameter_names_are_case_insensitive_and_unknown_ones_ignored(server: Server) -> None:
    response = server.session.get(
        f"{server.url}/tap/sync",
        params={
            "lang": "ADQL-2.1",
            "query": "SELECT TOP 1 table_name FROM tap_schema.tables",
            "responseformat": "csv",
            "NOSUCH": "x",
        },
    )
    assert response.status_code == 200 and response.text.startswith("table_name")


@pytest.mark.parametrize(
    ("fmt", "reader"),
    [
        ("csv", lambda b: list(csv.DictReader(io.StringIO(b.decode())))),
        ("tsv", lambda b: list(csv.DictReader(io.StringIO(b.decode()), delimiter="\t"))),
        ("json", lambda b: json.loads(b)["data"]),
        ("votable/td", lambda b: list(parse_single_table(io.BytesIO(b)).array)),
        ("votable", lambda b: list(parse_single_table(io.BytesIO(b)).array)),
    ],
)
def test_formats(server: Server, graph: Graph, fmt: str, reader: object) -> None:
    response = sync(
        server, "SELECT TOP 2 id, content_size FROM provenance.entity", RESPONSEFORMAT=fmt
    )
    assert len(reader(response.content)) == 2  # type: ignore[operator]


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("SELEKT * FROM provenance.entity", "line 1"),
        ("SELECT * FROM provenance.nothing", "no table provenance.nothing"),
        ("SELECT * FROM sqlite_master", "no table sqlite_master"),
        ("SELECT * FROM users", "no table users"),
        ("SELECT * FROM pg_catalog.pg_tables", "no table pg_catalog.pg_tables"),
        ("SELECT name FROM provenance.entity; DELETE FROM prov_entities", "one SELECT"),
        ("DELETE FROM provenance.entity", "only SELECT"),
        ("SELECT POINT('ICRS', 1, 2) FROM provenance.entity", "geometry"),
        ("SELECT secret FROM provenance.entity", "secret"),
        ("SELECT load_extension('x') FROM provenance.entity", "LOAD_EXTENSION"),
    ],
)
def test_bad_queries_are_error_votables_saying_what(server: Server, query: str, says: str) -> None:
    assert says in error_of(sync(server, query))


def test_a_sync_query_past_its_time_limit_is_stopped(start_server: object, tmp_path: Path) -> None:
    running = start_server({"OPUS_TAP_SYNC_TIMEOUT": "0.5"})  # type: ignore[operator]
    slow = (
        "SELECT COUNT(*) FROM tap_schema.columns AS a, tap_schema.columns AS b, "
        "tap_schema.columns AS c, tap_schema.columns AS d"
    )
    assert "time limit" in error_of(sync(running, slow))


# -- async -----------------------------------------------------------------------------------


def test_async_jobs_are_uws_jobs(server: Server, graph: Graph) -> None:
    response = server.session.post(
        f"{server.url}/tap/async",
        data={
            "LANG": "ADQL",
            "QUERY": "SELECT TOP 5 id FROM provenance.entity",
            "PHASE": "RUN",
            "RESPONSEFORMAT": "csv",
            "RUNID": "mine",
            "UNKNOWN": "ignored",
        },
        allow_redirects=False,
    )
    assert response.status_code == 303
    job = response.headers["Location"]
    assert job.startswith(f"{server.url}/tap/async/")
    doc = server.wait_final(job)
    assert doc.findtext(f"{UWS}phase") == "COMPLETED"
    assert_valid(load_schema("UWS-v1.1.xsd"), server.session.get(job).content)
    result = server.session.get(f"{job}/results/result")
    assert result.headers["Content-Type"].startswith("text/csv")
    assert len(result.text.splitlines()) == 6
    bad = server.session.post(
        f"{server.url}/tap/async",
        data={"LANG": "ADQL", "QUERY": "SELECT nope FROM provenance.entity", "PHASE": "RUN"},
    )
    failed = server.wait_final(bad.url)
    assert failed.findtext(f"{UWS}phase") == "ERROR"
    assert "nope" in error_of(server.session.get(f"{bad.url}/error"))
    deleted = server.session.delete(job, allow_redirects=False)
    assert deleted.status_code == 303 and deleted.headers["Location"] == f"{server.url}/tap/async"


# -- examples, identifiers --------------------------------------------------------------------


def test_every_example_runs(server: Server, graph: Graph) -> None:
    page = server.session.get(f"{server.url}/tap/examples")
    doc = etree.fromstring(page.content)
    queries = [e.text or "" for e in doc.iter() if e.get("property") == "query"]
    assert len(queries) >= 4
    queries += [e.text or "" for e in doc.iter() if e.get("class") == "adql-lineage"]
    for query in queries:
        response = sync(server, query)
        assert b'value="ERROR"' not in response.content, (query, response.text)
    lineage = next(q for q in queries if "find_prov_precursors" in q)
    assert rows(server, lineage), lineage


def test_locations_and_ids_resolve(server: Server, graph: Graph) -> None:
    found = rows(
        server,
        "SELECT id, location, sha256 FROM provenance.entity "
        f"WHERE id = '{uri(server, graph.results['a'])}'",
    )
    assert len(found) == 1
    for url in (found[0]["location"], found[0]["id"]):  # the id resolves to the bytes too
        body = requests.get(str(url), timeout=30)
        assert body.status_code == 200 and body.content.startswith(b"Hello, TAP a"), url


# -- visibility --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str, str]]:
    """A server without anonymous access: alice's jobs; bob has none."""
    running = launch(tmp_path_factory.mktemp("tap-private"), {"OPUS_ALLOW_ANONYMOUS": "false"})
    alice = opus(running, "user", "add", "alice").stdout.strip().splitlines()[-1]
    bob = opus(running, "user", "add", "bob").stdout.strip().splitlines()[-1]
    running.session.headers["Authorization"] = f"Bearer {alice}"
    first = run(running, "hello", name="private")
    run(running, "opus_append", input=f"{first}/results/greeting", text="x")
    running.session.headers.pop("Authorization")
    yield running, alice, bob
    running.stop()


@pytest.mark.parametrize(
    "table",
    [
        "entity",
        "activity",
        "agent",
        "used",
        "wasgeneratedby",
        "parameter",
        "wasassociatedwith",
        "wasderivedfrom",
        "wasinformedby",
        "context",
        "activitydescription",
        "parameterdescription",
        "wasattributedto",
    ],
)
def test_a_reader_sees_only_what_they_may(private: tuple[Server, str, str], table: str) -> None:
    running, alice, bob = private
    query = f"SELECT COUNT(*) AS n FROM provenance.{table}"
    counts = {}
    for name, token in (("alice", alice), ("bob", bob)):
        running.session.headers["Authorization"] = f"Bearer {token}"
        counts[name] = rows(running, query)[0]["n"]
    running.session.headers.pop("Authorization")
    assert counts["alice"] > 0 and counts["bob"] == 0, counts


def test_lineage_stops_at_what_the_reader_may_not_see(private: tuple[Server, str, str]) -> None:
    running, alice, bob = private
    running.session.headers["Authorization"] = f"Bearer {alice}"
    newest = rows(
        running,
        "SELECT TOP 1 e.id FROM provenance.entity AS e "
        "JOIN provenance.wasgeneratedby AS g ON g.entity = e.id ORDER BY e.generatedAtTime DESC",
    )[0]["id"]
    assert len(rows(running, f"SELECT * FROM find_prov_precursors('{newest}', 10) AS p")) == 3
    running.session.headers["Authorization"] = f"Bearer {bob}"
    assert rows(running, f"SELECT * FROM find_prov_precursors('{newest}', 10) AS p") == []
    running.session.headers.pop("Authorization")
    assert (
        running.session.post(
            f"{running.url}/tap/sync", data={"LANG": "ADQL", "QUERY": "SELECT 1"}
        ).status_code
        == 401
    )
    assert requests.get(f"{running.url}/tap/capabilities", timeout=30).status_code == 200


def test_ci_has_stilts() -> None:
    if IN_CI:
        have("stilts")


# -- uploads by URL, timestamps -----------------------------------------------------------------


def _votable_with_times(path: Path, server: Server, graph: Graph) -> None:
    from astropy.table import Table

    table = Table(
        {
            "file": [uri(server, graph.results[n]) for n in ("a", "b")],
            "seen": ["2026-12-01T10:00:00", "2030-01-01T00:00:00"],
        }
    )
    table.write(path, format="votable", overwrite=True)
    text = path.read_text().replace('name="seen"', 'name="seen" xtype="timestamp"')
    path.write_text(text)


def test_an_upload_by_url_is_fetched_and_its_timestamps_compare(
    start_server: object, file_server: tuple[str, Path], tmp_path: Path
) -> None:
    running = start_server({"OPUS_FETCH_ALLOW_HOSTS": "127.0.0.1"})  # type: ignore[operator]
    graph = Graph(
        {},
        {n: result_entity(running, run(running, "hello", name=n)) for n in ("a", "b")},
    )
    base, folder = file_server
    _votable_with_times(folder / "mine.xml", running, graph)
    query = (
        "SELECT u.file, e.name FROM TAP_UPLOAD.mine AS u "
        "JOIN provenance.entity AS e ON e.id = u.file WHERE e.generatedAtTime < u.seen"
    )
    for mode in ("sync", "async"):
        if mode == "sync":
            response = sync(running, query, UPLOAD=f"mine,{base}/mine.xml")
            content = response.content
        else:
            created = running.session.post(
                f"{running.url}/tap/async",
                data={
                    "LANG": "ADQL",
                    "QUERY": query,
                    "UPLOAD": f"mine,{base}/mine.xml",
                    "PHASE": "RUN",
                },
            )
            running.wait_final(created.url)
            content = running.session.get(f"{created.url}/results/result").content
        table = parse_single_table(io.BytesIO(content)).to_table()
        assert [str(f) for f in table["file"]] == [uri(running, graph.results["b"])], mode


def test_an_upload_from_a_private_address_is_refused(
    server: Server, file_server: tuple[str, Path], tmp_path: Path
) -> None:
    base, folder = file_server
    (folder / "mine.xml").write_text("<VOTABLE/>")
    response = sync(server, "SELECT * FROM TAP_UPLOAD.mine", UPLOAD=f"mine,{base}/mine.xml")
    assert "UPLOAD mine" in error_of(response) and "127.0.0.1" in error_of(response)


def test_uploads_past_their_limits_are_refused(start_server: object, tmp_path: Path) -> None:
    from astropy.table import Table

    running = start_server({"OPUS_TAP_UPLOAD_MAX_ROWS": "3"})  # type: ignore[operator]
    path = tmp_path / "big.xml"
    Table({"x": list(range(10))}).write(path, format="votable")
    response = running.session.post(
        f"{running.url}/tap/sync",
        data={"LANG": "ADQL", "QUERY": "SELECT * FROM TAP_UPLOAD.big", "UPLOAD": "big,param:t"},
        files={"t": path.read_bytes()},
    )
    assert "3" in error_of(response) and "big" in error_of(response)

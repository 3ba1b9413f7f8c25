"""An entity found wrong: invalidated (an administrator's POST /prov/invalidate), shown so
in every provenance format, ProvSAP and TAP, and what was made from it run again
(`opus prov rerun`), on a real server and a lineage that fans out and in:

    A = pair(alpha, beta) -> X;  R = pair(alpha, gamma) -> NEW (the replacement)
    X -> B = pick first -> b,  X -> C = pick count -> c,  X -> T = pick last -> t
    b + c -> D = pair -> d,    c + t -> F = pair -> f

With NEW in X's place, b and c come out with the same bytes (alpha, 2): D's new job
reuses D's results; t does not (gamma): F runs again.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import prov
import prov.model
import pytest
import requests
import sqlalchemy
from lxml import etree

from tests.servers import ROOT, Server, launch, opus_all

UWS = "{http://www.ivoa.net/xml/UWS/v1.0}"
VOTABLE = {"v": "http://www.ivoa.net/xml/VOTable/v1.3"}
PROV_XSD = Path(prov.__file__).parent / "tests" / "schemas" / "prov.xsd"
REASON = "the flat field of night 42 was wrong & <biased>"


@dataclass
class World:
    server: Server
    tokens: dict[str, str]  # user -> token: root (admin), ada (owns the jobs), bob
    urls: dict[str, str]  # job letter -> job URL
    results: dict[str, str]  # job letter -> its result's qualified name

    def job(self, letter: str) -> str:
        return self.urls[letter].rsplit("/", 1)[-1]

    def as_user(self, name: str | None) -> requests.Session:
        session = requests.Session()
        if name:
            session.headers["Authorization"] = f"Bearer {self.tokens[name]}"
        return session


def upload(**texts: str) -> list[tuple[str, tuple[str, bytes]]]:
    return [(role, (f"{role}.txt", text.encode())) for role, text in texts.items()]


def result_of(server: Server, url: str) -> str:
    doc = server.session.get(f"{url}/provenance").json()
    [generated] = [g["prov:entity"] for g in doc["wasGeneratedBy"].values()]
    return str(generated)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    server = launch(tmp_path_factory.mktemp("invalidation"))
    made = opus_all(
        server, ["user", "add", "root", "--admin"], ["user", "add", "ada"], ["user", "add", "bob"]
    )
    assert all(m.returncode == 0 for m in made), [m.stderr for m in made]
    tokens = {
        n: m.stdout.strip().splitlines()[-1]
        for n, m in zip(("root", "ada", "bob"), made, strict=True)
    }
    server.session.headers["Authorization"] = f"Bearer {tokens['ada']}"
    urls: dict[str, str] = {}
    results: dict[str, str] = {}

    def run(letters: str, make: Any) -> None:
        for letter in letters:
            urls[letter] = make(letter)
        for letter in letters:
            assert server.wait_final(urls[letter]).findtext(f"{UWS}phase") == "COMPLETED"
            results[letter] = result_of(server, urls[letter])

    def ref(letter: str) -> str:
        return f"{urls[letter]}/results/" + ("line" if letter in "BCT" else "joined")

    first = {"A": "beta\n", "R": "gamma\n"}
    run("AR", lambda j: server.create("pair", files=upload(left="alpha\n", right=first[j])))
    how = {"B": "first", "C": "count", "T": "last"}
    run("BCT", lambda j: server.create("pick", input=ref("A"), how=how[j], RUNID=f"pick {j}"))
    pairs = {"D": ("B", "C"), "F": ("C", "T")}
    run("DF", lambda j: server.create("pair", left=ref(pairs[j][0]), right=ref(pairs[j][1])))
    yield World(server, tokens, urls, results)
    server.stop()


def invalidate(world: World, who: str | None, **data: str | list[str]) -> requests.Response:
    return world.as_user(who).post(f"{world.server.url}/prov/invalidate", data=data)


@pytest.fixture(scope="module")
def invalidated(world: World) -> dict[str, Any]:
    """X invalidated by root: the answer, with what is downstream."""
    response = invalidate(world, "root", ID=world.results["A"], REASON=REASON)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    return dict(response.json())


def test_only_an_admin_invalidates_and_bad_input_is_named(world: World) -> None:
    x = world.results["A"]
    for who in ("ada", "bob", None):  # ada owns the jobs, yet is no administrator
        response = invalidate(world, who, ID=x, REASON="mine")
        assert response.status_code == 403, response.text
        assert "administrator" in response.text
    unknown = invalidate(world, "root", ID="opus:ent_0000000000000000", REASON="gone")
    assert unknown.status_code == 404 and "opus:ent_0000000000000000" in unknown.text
    bad: list[tuple[dict[str, str | list[str]], str]] = [
        ({"ID": x}, "REASON"),
        ({"REASON": "why"}, "ID"),
        ({"ID": x, "REASON": "bell \x07"}, "REASON"),
        ({"ID": f"opus:job_{world.job('A')}", "REASON": "why"}, "not an entity"),
        ({"ID": [x, x], "REASON": "why"}, "ID"),
    ]
    for data, name in bad:
        response = invalidate(world, "root", **data)
        assert response.status_code == 400 and name in response.text, response.text


def test_the_downstream_list_is_exactly_what_was_made_from_it(
    world: World, invalidated: dict[str, Any]
) -> None:
    r, job = world.results, world.job
    assert invalidated["entity"] == r["A"]
    assert invalidated["prefix"] == {"opus": f"{world.server.url}/prov/"}
    ended = invalidated["invalidation"]
    assert ended["reason"] == REASON and ended["agents"] == ["opus:user_root"]
    assert ended["activity"].startswith("opus:inval_")
    down = invalidated["downstream"]
    assert sorted(down["entities"]) == sorted(r[j] for j in "BCTDF")
    jobs = [j["job"] for j in down["jobs"]]
    assert sorted(jobs) == sorted(job(j) for j in "BCTDF")
    assert {j["phase"] for j in down["jobs"]} == {"COMPLETED"}
    assert {j["url"] for j in down["jobs"]} == {world.urls[j] for j in "BCTDF"}
    # in dependency order: each fan-in after the jobs whose results it used
    for fan_in, sources in (("D", "BC"), ("F", "CT")):
        assert all(jobs.index(job(fan_in)) > jobs.index(job(s)) for s in sources)
        assert all(
            down["entities"].index(r[fan_in]) > down["entities"].index(r[s]) for s in sources
        )
    again = invalidate(world, "root", ID=r["A"], REASON="twice")
    assert again.status_code == 409 and REASON in again.text


def provsap(world: World, who: str, **params: str) -> requests.Response:
    response = world.as_user(who).get(f"{world.server.url}/provsap", params=params)
    assert response.status_code == 200, response.text
    return response


def test_every_format_marks_the_invalidation(world: World, invalidated: dict[str, Any]) -> None:
    x, activity = world.results["A"], invalidated["invalidation"]["activity"]
    lineage = {"ID": world.results["D"], "DEPTH": "ALL"}  # X is a precursor of d
    doc = provsap(world, "ada", **lineage).json()
    assert [(i["prov:entity"], i["prov:activity"]) for i in doc["wasInvalidatedBy"].values()] == [
        (x, activity)
    ]
    assert doc["activity"][activity]["voprov:comment"] == REASON
    assert (activity, "opus:user_root") in {
        (a["prov:activity"], a["prov:agent"]) for a in doc["wasAssociatedWith"].values()
    }
    provn = provsap(world, "ada", RESPONSEFORMAT="PROV-N", **lineage).text
    assert f"wasInvalidatedBy({x}, {activity}, " in provn
    parsed = prov.model.ProvDocument.deserialize(content=provn, format="provn")
    assert len(list(parsed.get_records(prov.model.ProvInvalidation))) == 1
    xml = etree.fromstring(provsap(world, "ada", RESPONSEFORMAT="PROV-XML", **lineage).content)
    schema = etree.XMLSchema(etree.parse(str(PROV_XSD)))
    assert schema.validate(xml), schema.error_log
    [ended] = xml.iterfind("{http://www.w3.org/ns/prov#}wasInvalidatedBy")
    assert ended[0].get("{http://www.w3.org/ns/prov#}ref") == x
    votable = etree.fromstring(
        provsap(world, "ada", RESPONSEFORMAT="PROV-VOTABLE", **lineage).content
    )
    [table] = votable.iterfind(".//v:TABLE[@name='WasInvalidatedBy']", VOTABLE)
    assert [td.text for td in table.iterfind(".//v:TD", VOTABLE)][:2] == [x, activity]
    if shutil.which("dot"):
        svg = provsap(world, "ada", RESPONSEFORMAT="PROV-SVG", **lineage).content
        assert b'class="node entity invalidated"' in svg and b"line-through" in svg
    # the job that made X shows it, and ProvSAP finds the invalidation by its own id
    made = world.server.session.get(f"{world.urls['A']}/provenance").json()
    assert next(iter(made["wasInvalidatedBy"].values()))["prov:entity"] == x
    alone = provsap(world, "ada", ID=activity, DEPTH="0").json()
    assert alone["activity"][activity]["prov:label"] == "invalidation"


def adql(world: World, who: str, query: str) -> list[dict[str, Any]]:
    response = world.as_user(who).post(
        f"{world.server.url}/tap/sync",
        data={"LANG": "ADQL", "QUERY": query, "RESPONSEFORMAT": "json"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    names = [c["name"].lower() for c in body["metadata"]]
    return [dict(zip(names, row, strict=True)) for row in body["data"]]


def test_tap_shows_the_invalidation_to_who_may_see_the_entity(
    world: World, invalidated: dict[str, Any]
) -> None:
    query = (
        "SELECT i.entity, i.atTime, a.comment, w.agent FROM provenance.wasinvalidatedby AS i"
        " JOIN provenance.activity AS a ON a.id = i.activity"
        " JOIN provenance.wasassociatedwith AS w ON w.activity = a.id"
    )
    namespace = f"{world.server.url}/prov/"
    [row] = adql(world, "ada", query)
    assert row["entity"] == namespace + world.results["A"].removeprefix("opus:")
    assert row["comment"] == REASON and row["agent"] == namespace + "user_root"
    assert row["attime"].startswith(invalidated["invalidation"]["time"][:19])
    assert adql(world, "bob", query) == []  # bob may not see ada's files


def rerun(world: World, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opus.cli", "prov", "rerun", "--downstream", *args],
        env=dict(world.server.env),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def scalar(world: World, statement: str, **params: object) -> Any:
    """One value read from the server's database."""
    engine = sqlalchemy.create_engine(world.server.db_url)
    try:
        with engine.connect() as conn:
            return conn.execute(sqlalchemy.text(statement), params).scalar()
    finally:
        engine.dispose()


def jobs_made(world: World) -> int:
    return int(scalar(world, "SELECT COUNT(*) FROM jobs"))


def plan_rows(out: str) -> list[list[str]]:
    lines = [line for line in out.splitlines() if line and line[0].isdigit()]
    return [line.split("\t") for line in lines]


def test_a_dry_run_prints_the_order_and_creates_nothing(
    world: World, invalidated: dict[str, Any]
) -> None:
    x, new, job = world.results["A"], world.results["R"], world.job
    before = jobs_made(world)
    replaced, regenerated, unknown, wrong = opus_all(
        world.server,
        *(
            ["prov", "rerun", "--downstream", entity, *more, "--dry-run"]
            for entity, more in (
                (x, ["--replacement", new.removeprefix("opus:ent_")]),
                (x, []),
                ("opus:ent_0000000000000000", []),
                (x, ["--replacement", "opus:ent_0000000000000001"]),
            )
        ),
    )
    assert replaced.returncode == 0 and regenerated.returncode == 0, replaced.stderr
    assert jobs_made(world) == before
    assert unknown.returncode == 2 and "no provenance entity" in unknown.stderr
    assert wrong.returncode == 2 and "opus:ent_0000000000000001" in wrong.stderr
    rows = plan_rows(replaced.stdout)
    order = [row[1] for row in rows]
    assert sorted(order) == sorted(job(j) for j in "BCTDF")
    for fan_in, sources in (("D", "BC"), ("F", "CT")):
        assert all(order.index(job(fan_in)) > order.index(job(s)) for s in sources)
    by_job = {row[1]: row for row in rows}
    bare = {e: e.removeprefix("opus:ent_") for e in (x, new)}
    assert by_job[job("B")][5] == f"input: {bare[x]} -> {bare[new]}"
    assert by_job[job("D")][4] == ",".join(sorted([job("B"), job("C")]))
    assert all(row[3] == "ada" for row in rows)
    # without a replacement, the job that made X runs first, to make it anew
    assert next(row[1] for row in plan_rows(regenerated.stdout)) == job("A")


@pytest.fixture(scope="module")
def replaced(world: World, invalidated: dict[str, Any]) -> dict[str, list[str]]:
    """`opus prov rerun --downstream X --replacement NEW`: old job -> its outcome row."""
    done = rerun(world, world.results["A"], "--replacement", world.results["R"])
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.split("\t") for line in done.stdout.splitlines()]
    start = rows.index(["old job", "new job", "phase", "note"])
    return {row[0]: row for row in rows[start + 1 :]}


def job_doc(world: World, job_id: str, jobdef: str) -> etree._Element:
    response = world.server.session.get(f"{world.server.url}/rest/{jobdef}/{job_id}")
    assert response.status_code == 200, response.text
    return etree.fromstring(response.content)


def test_rerun_replaces_the_entity_and_reuses_what_did_not_change(
    world: World, replaced: dict[str, list[str]]
) -> None:
    job, r = world.job, world.results
    assert sorted(replaced) == sorted(job(j) for j in "BCTDF")
    new = {j: replaced[job(j)][1] for j in "BCTDF"}
    assert {row[2] for row in replaced.values()} == {"COMPLETED"}
    assert replaced[job("D")][3] == f"reused opus:job_{job('D')}"  # b, c: the same bytes
    assert all(replaced[job(j)][3] == "" for j in "BCTF")  # their inputs changed: they ran
    provenance = {
        j: world.server.session.get(
            f"{world.server.url}/rest/{'pair' if j in 'DF' else 'pick'}/{new[j]}/provenance"
        ).json()
        for j in "BCTDF"
    }
    made = {
        j: next(g["prov:entity"] for g in doc["wasGeneratedBy"].values())
        for j, doc in provenance.items()
    }
    for j, doc in provenance.items():
        activity = doc["activity"][f"opus:job_{new[j]}"]
        assert activity["voprov:replaces"] == {"$": f"opus:job_{job(j)}", "type": "xsd:QName"}
        used = {(u["prov:entity"], u.get("prov:role")) for u in doc["used"].values()}
        expected = {
            "B": {(r["R"], "input")},
            "C": {(r["R"], "input")},
            "T": {(r["R"], "input")},
            "D": {(made["B"], "left"), (made["C"], "right"), (r["D"], "reused_joined")},
            "F": {(made["C"], "left"), (made["T"], "right")},
        }[j]
        assert used == expected, j
    assert world.server.session.get(f"{world.server.url}/store/{made['F'][9:]}").text == (
        "2\ngamma\n"
    )
    # the owner's jobs still, each made once those whose results it uses had ended
    for j, (sources, jobdef) in {"D": ("BC", "pair"), "F": ("CT", "pair")}.items():
        created = job_doc(world, new[j], jobdef).findtext(f"{UWS}creationTime") or ""
        for s in sources:
            ended = job_doc(world, new[s], "pick").findtext(f"{UWS}endTime") or ""
            assert created >= ended, (j, s)
    assert job_doc(world, new["B"], "pick").findtext(f"{UWS}ownerId") == "ada"
    assert scalar(world, "SELECT replaces FROM jobs WHERE id = :id", id=new["F"]) == job("F")


def test_without_a_replacement_the_job_that_made_it_runs_again(
    world: World, replaced: dict[str, list[str]]
) -> None:
    """A is deterministic and its values and inputs are the same, yet it runs again: its
    result was invalidated. The new X has X's bytes: what follows reuses its results."""
    done = rerun(world, world.results["A"])
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.split("\t") for line in done.stdout.splitlines()]
    outcomes = rows[rows.index(["old job", "new job", "phase", "note"]) + 1 :]
    assert outcomes[0][0] == world.job("A") and outcomes[0][3] == ""  # ran, not reused
    assert {row[2] for row in outcomes} == {"COMPLETED"}
    later = {row[0]: row[3] for row in outcomes[1:]}
    assert later[world.job("B")] == f"reused opus:job_{world.job('B')}"


def test_the_command_line_invalidates_as_an_administrator(world: World) -> None:
    f = world.results["F"]  # used by nothing but F's reuses
    done, refused = opus_all(
        world.server,
        *(
            ["prov", "invalidate", f, "--reason", "too bright", "--user", u]
            for u in ("root", "ada")
        ),
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["entity"] == f
    assert {j["jobdef"] for j in report["downstream"]["jobs"]} <= {"pair"}
    assert report["invalidation"]["reason"] == "too bright"
    assert report["invalidation"]["agents"] == ["opus:user_root"]
    assert refused.returncode == 2 and "ada is not an administrator" in refused.stderr

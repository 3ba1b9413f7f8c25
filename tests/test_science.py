"""The science definitions end to end, on real servers and the real data of ../shared/data.

- the AMPEL tier pipeline (ztf_tier_pipeline: t0 -> t1 -> t2 in chunks -> t3 as child
  jobs) on the real ZTF alerts: its targets are those computed here from the Avro files
  (the T0 cuts at their defaults, then the TiDES tidesSNZTFSelect criteria of the YAML
  file), its T0 step counts the partnership data it dropped for the anonymous owner;
- the lineage of a target: ProvSAP (PROV-JSON, DEPTH=ALL) and the ADQL function
  find_prov_precursors reach the same records, and the derivations lead from the T3
  result through the target's state and its datapoints to the upload of exactly the alert
  files holding that object; a state derives from its own object's datapoints only;
- reuse of identical computations: the same definition, values and input bytes reuse an
  earlier job's results (same checksums, roles reused_*), a changed value or input does
  not, nor does rerun=true; the pipeline run again reuses T0 to T2 and runs T3 again,
  whose staging upsert then changes nothing; two tests show where reuse gives results
  the job would not compute (an input renamed, a reference file changed): they fail
  until the reuse key sees input names and reference files;
- data rights: the ztf_partnership right of a group keeps programid 2 data, its absence
  drops it and the provenance says how much;
- the gammapy analyses: every DL3 file and table read in the provenance with the file's
  checksum, the gammapy version in the context, the counts map against the events counted
  with astropy, ON counts against astropy, a run not in the data store an ERROR naming it;
- bad parameter values refused at submission (400 naming the parameter);
- the chunked fan-out on Celery workers: two chunked jobs at once on two runner slots both
  complete (a parent holds no slot while its chunks run), their rows those of their chunks.

Expected numbers come from the data files (fastavro, astropy), never from a job's output.
One server (anonymous access on, on loopback) serves the module; the Celery test (with
its workers) and the reference-file test have servers of their own.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import io
import json
import math
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
import redis
import requests
import yaml  # type: ignore[import-untyped, unused-ignore]
from astropy.coordinates import SkyCoord  # type: ignore[import-untyped, unused-ignore]
from astropy.io import fits  # type: ignore[import-untyped, unused-ignore]
from astropy.io.votable import parse_single_table  # type: ignore[import-untyped, unused-ignore]
from astropy.wcs import WCS  # type: ignore[import-untyped, unused-ignore]
from lxml import etree

from tests.servers import Server, launch, opus_all, require_shared
from tests.test_celery import SHARED_REDIS, Cluster, require_redis
from tests.test_units_gammapy import CRAB, events, run_file
from tests.test_units_ztf import (
    BUNDLE,
    LONG,
    PARTNER,
    alerts_of,
    hand_selection,
    kept_by_object,
    unique_detections,
    unique_limits,
)

UWS = "{http://www.ivoa.net/xml/UWS/v1.0}"
HREF = "{http://www.w3.org/1999/xlink}href"
STEPS = {
    "t0": "t0_ingest_alerts",
    "t1": "t1_combine_states",
    "t2": "t2_lightcurve_features",
    "t3": "t3_select_export",
}
CHUNK_SIZE = 8  # t2_lightcurve_features_vot.xml
SELECTION = "tidesSNZTFSelect"
REUSED = re.compile(r"reused the results of opus:job_([0-9a-f]{16})")
# the count lines a unit's manifest adds to its activity's comment: "name: value (why)"
COUNT = re.compile(r"(?:^|; )(\w+): (\d+)")
# the nodes of a lineage walk among a PROV-JSON document's entities (not the descriptions,
# parameters and contexts the document also shows): job results, uploads, reference files
ENTITY_NODE = re.compile(r"^opus:(ent_[0-9a-f]{16}|ref_[0-9a-f]{24}(_\w+)?)$")
# a Redis database of this module's own: the Celery test flushes it
SCIENCE_REDIS = urlsplit(SHARED_REDIS)._replace(path="/8").geturl()
MAPS: dict[str, Any] = {"obs_ids": "23523", "nxpix": "100", "nypix": "100", "binsz": "0.02"}
SPECTRUM: dict[str, Any] = {"obs_ids": "23523 23526"}
ABSENT_RUN = "20136"  # listed in the DR1 index, its file not in the data folder

Doc = dict[str, Any]


# -- the data, read here ------------------------------------------------------------------


def ztf() -> Path:
    return require_shared("data") / "ztf-alerts"


def alert_files() -> list[Path]:
    """The alert files the pipeline is given: two bundles, the long light curve, the five
    alerts of 2018-06-01."""
    folder = ztf()
    return [
        folder / BUNDLE,
        folder / LONG,
        folder / PARTNER,
        *sorted((folder / "ztf_public_20180601").glob("*.avro")),
    ]


def state_id(candids: list[int]) -> str:
    """A state's id as t1_combine_states documents it: the sha256 of the compact JSON of
    the sorted detection candids."""
    text = json.dumps(sorted(int(c) for c in candids), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Expected:
    """What the alerts give, computed from the Avro files."""

    alerts: int
    kept: dict[str, dict[int, dict[str, Any]]]  # objectId -> candid -> detection kept
    targets: set[str]  # the objects the selection accepts
    states: dict[str, str]  # objectId -> its state's id
    sources: dict[str, set[str]]  # objectId -> the alert files holding it
    partnership: int  # distinct programid 2 datapoints (detections and upper limits)


@functools.cache
def expected() -> Expected:
    files = alert_files()
    criteria = yaml.safe_load(
        (require_shared("data") / "tides" / "tidesSelectionFunctions.yml").read_text()
    )[SELECTION]
    kept = kept_by_object(files)  # the T0 cuts at their defaults, no partnership right
    sources: dict[str, set[str]] = {}
    alerts = 0
    for path in files:
        for alert in alerts_of(path):
            alerts += 1
            sources.setdefault(alert["objectId"], set()).add(path.name)
    partnership = sum(p["programid"] == 2 for _, p in unique_detections(files).values())
    partnership += sum(p["programid"] == 2 for p in unique_limits(files).values())
    return Expected(
        alerts,
        kept,
        hand_selection(kept, criteria),
        {o: state_id(list(points)) for o, points in kept.items()},
        sources,
        partnership,
    )


def uploads(paths: list[Path], role: str = "alerts") -> list[tuple[str, tuple[str, bytes]]]:
    return [(role, (path.name, path.read_bytes())) for path in paths]


# -- talking to a server ------------------------------------------------------------------


def job_id(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def qname(url: str) -> str:
    return f"opus:job_{job_id(url)}"


def completed(server: Server, url: str, timeout: float = 60) -> etree._Element:
    doc = server.wait_final(url, timeout)
    phase = doc.findtext(f"{UWS}phase")
    assert phase == "COMPLETED", (url, phase, server.session.get(f"{url}/error").text)
    return doc


def result_ids(doc: etree._Element) -> list[str]:
    return [str(r.get("id")) for r in doc.iter(f"{UWS}result")]


def listed(server: Server, jobdef: str) -> dict[str, str]:
    """runId -> job URL of the jobs of a definition (each runId of these tests is unique)."""
    response = server.session.get(server.rest(jobdef))
    assert response.status_code == 200, response.text
    found: dict[str, str] = {}
    for ref in etree.fromstring(response.content).iter(f"{UWS}jobref"):
        run_id = ref.findtext(f"{UWS}runId") or ""
        assert run_id not in found or not run_id, f"two {jobdef} jobs of runId {run_id!r}"
        found[run_id] = str(ref.get(HREF))
    return found


def listed_run_id(server: Server, url: str) -> str:
    return str(server.wait_final(url).findtext(f"{UWS}runId"))


def job_urls(server: Server, jobdef: str) -> list[str]:
    response = server.session.get(server.rest(jobdef))
    assert response.status_code == 200, response.text
    return sorted(str(r.get(HREF)) for r in etree.fromstring(response.content).iter(f"{UWS}jobref"))


def provenance(server: Server, url: str) -> Doc:
    response = server.session.get(f"{url}/provenance")
    assert response.status_code == 200, response.text
    doc: Doc = response.json()
    return doc


def provsap(server: Server, entity: str) -> Doc:
    response = server.session.get(
        f"{server.url}/provsap",
        params={"ID": entity, "DEPTH": "ALL", "RESPONSEFORMAT": "PROV-JSON"},
    )
    assert response.status_code == 200, response.text
    doc: Doc = response.json()
    return doc


def relations(doc: Doc, kind: str) -> list[Doc]:
    return list(doc.get(kind, {}).values())


def comment_of(doc: Doc, url: str) -> str:
    return str(doc["activity"][qname(url)].get("voprov:comment", ""))


def counts_of(comment: str) -> dict[str, int]:
    return {name: int(value) for name, value in COUNT.findall(comment)}


def used_by(doc: Doc, url: str) -> list[tuple[str, str]]:
    """(entity, role) of what the job used."""
    return [
        (str(u["prov:entity"]), str(u["prov:role"]))
        for u in relations(doc, "used")
        if u["prov:activity"] == qname(url)
    ]


def generated_by(doc: Doc, url: str, role: str | None = None) -> dict[str, str]:
    """entity -> role of what the job generated (in `role` only, when given)."""
    return {
        str(g["prov:entity"]): str(g["prov:role"])
        for g in relations(doc, "wasGeneratedBy")
        if g["prov:activity"] == qname(url) and role in (None, g["prov:role"])
    }


def the_one(doc: Doc, url: str, role: str) -> str:
    (entity,) = generated_by(doc, url, role)
    return entity


def label(doc: Doc, entity: str) -> str:
    return str(doc["entity"][entity]["prov:label"])


def sha256_of(doc: Doc, entity: str) -> str:
    return str(doc["entity"][entity]["voprov:sha256"])


def derived(doc: Doc, url: str | None = None) -> dict[str, set[str]]:
    """generated entity -> the entities it was derived from (by the job `url` only)."""
    found: dict[str, set[str]] = {}
    for d in relations(doc, "wasDerivedFrom"):
        if url is None or d.get("prov:activity") == qname(url):
            found.setdefault(str(d["prov:generatedEntity"]), set()).add(str(d["prov:usedEntity"]))
    return found


def ancestors(derivations: dict[str, set[str]], entity: str) -> set[str]:
    """Everything an entity was derived from, directly or not."""
    seen: set[str] = set()
    todo = [entity]
    while todo:
        for source in derivations.get(todo.pop(), set()) - seen:
            seen.add(source)
            todo.append(source)
    return seen


def context_of(doc: Doc) -> Doc:
    """The voprov:Context entity of a job's PROV-JSON."""
    found = [
        e
        for e in doc["entity"].values()
        if isinstance(e.get("prov:type"), dict) and e["prov:type"]["$"] == "voprov:Context"
    ]
    assert len(found) == 1, found
    return dict(found[0])


def reused_from(server: Server, url: str) -> str | None:
    """The id of the job whose results this one reused (None: it ran)."""
    doc = provenance(server, url)
    match = REUSED.search(comment_of(doc, url))
    roles = {role for _, role in used_by(doc, url) if role.startswith("reused_")}
    assert bool(match) == bool(roles), (comment_of(doc, url), roles)
    if match is None:
        return None
    assert context_of(doc)["voprov:context_reused_from"] == f"opus:job_{match.group(1)}"
    return match.group(1)


def checksums(server: Server, url: str) -> dict[str, str]:
    """role -> sha256 of the job's results (one per role)."""
    doc = provenance(server, url)
    found = {role: sha256_of(doc, e) for e, role in generated_by(doc, url).items()}
    assert len(found) == len(generated_by(doc, url))
    return found


def rows(server: Server, url: str, result: str) -> list[dict[str, str]]:
    response = server.session.get(f"{url}/results/{result}")
    assert response.status_code == 200, response.text
    return list(csv.DictReader(io.StringIO(response.text)))


def tap(server: Server, query: str) -> list[dict[str, str]]:
    response = server.session.post(
        f"{server.url}/tap/sync", data={"LANG": "ADQL", "QUERY": query, "RESPONSEFORMAT": "csv"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/csv"), response.text
    return list(csv.DictReader(io.StringIO(response.text)))


def as_user(server: Server, token: str) -> Server:
    """The same server, talked to with a user's token."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    return dataclasses.replace(server, session=session)


def opus_cli(server: Server, *commands: list[str]) -> list[str]:
    """`opus` commands on the server's machine (its OPUS_* settings), run at once; the last
    line each printed."""
    lines = []
    for done in opus_all(server, *commands):
        assert done.returncode == 0, (done.args, done.stderr)
        lines.append(done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "")
    return lines


# -- the module's server and its pipeline run ---------------------------------------------


@pytest.fixture(scope="module")
def science(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of the shipped definitions reading the real data folder."""
    data = require_shared("data")
    running = launch(tmp_path_factory.mktemp("science"), {"OPUS_REAL_DATA": str(data)})
    yield running
    running.stop()


@dataclass
class Tiers:
    url: str  # the pipeline job
    doc: etree._Element
    steps: dict[str, str]  # t0..t3 -> the step's job URL
    chunks: list[str]  # the T2 step's chunks


def run_pipeline(server: Server, run_id: str) -> Tiers:
    url = server.create("ztf_tier_pipeline", RUNID=run_id, files=uploads(alert_files()))
    doc = completed(server, url, timeout=100)
    steps = {name: listed(server, jobdef)[f"{run_id}/{name}"] for name, jobdef in STEPS.items()}
    prefix = f"{run_id}/t2 chunk "
    features = listed(server, STEPS["t2"])
    chunks = [u for r, u in sorted(features.items()) if r.startswith(prefix)]
    return Tiers(url, doc, steps, chunks)


@pytest.fixture(scope="module")
def tiers(science: Server) -> Tiers:
    return run_pipeline(science, "tiers")


# -- parameters ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("jobdef", "values", "word"),
    [
        ("t0_ingest_alerts", {"rb_min": "2"}, "rb_min"),
        ("ztf_tier_pipeline", {"rb_min": "2"}, "rb_min"),
        ("ztf_tier_pipeline", {"mag_max": "faint"}, "mag_max"),
        ("t2_bazin_fit", {"band": "u"}, "band"),
        ("t3_select_export", {"selection": "noSuchSelect"}, "selection"),
        ("gammapy_maps", {"nxpix": "0"}, "nxpix"),
        ("gammapy_spectrum", {"emin": "-1"}, "emin"),
    ],
)
def test_a_bad_value_is_refused_at_submission(
    science: Server, jobdef: str, values: dict[str, str], word: str
) -> None:
    before = job_urls(science, jobdef)
    response = science.session.post(
        science.rest(jobdef), data={**values, "PHASE": "RUN"}, allow_redirects=False
    )
    assert response.status_code == 400, (response.status_code, response.text)
    assert word in response.text and "Traceback" not in response.text
    assert "Location" not in response.headers
    assert job_urls(science, jobdef) == before  # no job made


# -- 1. the tier pipeline on the real alerts ----------------------------------------------


def test_the_tier_pipeline_selects_the_targets_computed_from_the_alerts(
    science: Server, tiers: Tiers
) -> None:
    want = expected()
    assert sorted(result_ids(tiers.doc)) == ["targets_csv", "targets_vot"]
    targets = rows(science, tiers.url, "targets_csv")
    assert want.targets  # the sample has targets, and not every object is one
    assert len(want.targets) < len(want.kept)
    assert {r["objectId"] for r in targets} == want.targets
    assert len(targets) == len(want.targets)
    assert {r["objectId"]: r["state_id"] for r in targets} == {
        o: want.states[o] for o in want.targets
    }
    vot = science.session.get(f"{tiers.url}/results/targets_vot")
    table = parse_single_table(io.BytesIO(vot.content)).to_table()
    assert sorted(str(o) for o in table["objectId"]) == sorted(want.targets)

    # the steps: jobs of their own definitions, one after another
    for name in STEPS:
        completed(science, tiers.steps[name])
    start = {n: science.wait_final(u).findtext(f"{UWS}startTime") for n, u in tiers.steps.items()}
    end = {n: science.wait_final(u).findtext(f"{UWS}endTime") for n, u in tiers.steps.items()}
    for before, after in (("t0", "t1"), ("t1", "t2"), ("t2", "t3")):
        assert str(end[before]) <= str(start[after])
    # the pipeline's results are its last step's
    t3 = science.session.get(f"{tiers.steps['t3']}/results/targets_csv").content
    assert science.session.get(f"{tiers.url}/results/targets_csv").content == t3

    # T0: the alerts counted, and the partnership data dropped for the anonymous owner
    t0 = provenance(science, tiers.steps["t0"])
    comment = comment_of(t0, tiers.steps["t0"])
    counts = counts_of(comment)
    assert counts["alerts"] == want.alerts == 40
    assert counts["objects"] == len(want.kept)
    assert counts["detections"] == sum(len(points) for points in want.kept.values())
    assert counts["dropped_partnership"] == want.partnership > 0
    assert "dropped_partnership: " in comment and "ztf_partnership right" in comment
    datapoints = generated_by(t0, tiers.steps["t0"], "datapoints")
    assert sorted(label(t0, e) for e in datapoints) == sorted(f"{o}.json" for o in want.kept)
    # T1: a state per object, named by the hash of its detections
    t1 = provenance(science, tiers.steps["t1"])
    states = generated_by(t1, tiers.steps["t1"], "states")
    assert sorted(label(t1, e) for e in states) == sorted(f"{s}.json" for s in want.states.values())
    assert counts_of(comment_of(t1, tiers.steps["t1"]))["states"] == len(want.kept)
    # T2 in chunks of 8 states, one features row per state
    n = math.ceil(len(want.kept) / CHUNK_SIZE)
    assert n >= 3
    assert [listed_run_id(science, c) for c in tiers.chunks] == [
        f"tiers/t2 chunk {i}/{n}" for i in range(1, n + 1)
    ]
    features = rows(science, tiers.steps["t2"], "features")
    assert sorted(r["state_id"] for r in features) == sorted(want.states.values())


# -- 2. lineage -----------------------------------------------------------------------------


def test_a_targets_lineage_reaches_the_alert_files_it_came_from(
    science: Server, tiers: Tiers
) -> None:
    want = expected()
    t0_url, t1_url, t3_url = tiers.steps["t0"], tiers.steps["t1"], tiers.steps["t3"]
    t3 = provenance(science, t3_url)
    result = the_one(t3, t3_url, "targets_csv")
    # the pipeline used its last step's result and made its own from it
    pipeline = provenance(science, tiers.url)
    assert (result, "step_targets_csv") in used_by(pipeline, tiers.url)
    own = the_one(pipeline, tiers.url, "targets_csv")
    assert derived(pipeline, tiers.url)[own] == {result}

    t0 = provenance(science, t0_url)
    upload_of = {e: label(t0, e) for e, role in used_by(t0, t0_url) if role == "alerts"}
    assert sorted(upload_of.values()) == sorted(p.name for p in alert_files())

    walked = provsap(science, result)
    jobs = {qname(tiers.steps[s]) for s in ("t0", "t1", "t3")}
    assert set(walked["activity"]) == jobs
    # the walk goes through T0, which read every alert file
    assert set(upload_of) <= set(walked["entity"])
    # the derivations say which: the files of the targets' objects, and for each target
    # the files of its own object
    derivations = derived(walked)
    reached = ancestors(derivations, result) & set(upload_of)
    assert {upload_of[e] for e in reached} == {f for o in want.targets for f in want.sources[o]}
    assert len(reached) < len(upload_of)
    states = {label(walked, e): e for e in generated_by(walked, t1_url, "states")}
    datapoints = {label(walked, e): e for e in generated_by(walked, t0_url, "datapoints")}
    targets = rows(science, t3_url, "targets_csv")
    for target in targets:
        object_id = target["objectId"]
        state = states[f"{target['state_id']}.json"]
        assert state in derivations[result]
        before = ancestors(derivations, state)
        assert before & set(datapoints.values()) == {datapoints[f"{object_id}.json"]}
        assert {upload_of[e] for e in before & set(upload_of)} == want.sources[object_id]
    # the selection function read is there too, as a reference file
    (yml,) = [e for e, role in used_by(t3, t3_url) if role == "selection_function"]
    assert yml in derivations[result] and yml.startswith("opus:ref_")

    # TAP's lineage function reaches the same records, named by the URIs ProvSAP's
    # qualified names stand for
    prefix = str(walked["prefix"]["opus"])

    def uri(name: str) -> str:
        return prefix + name.removeprefix("opus:")

    found = tap(
        science, f"SELECT p.id, p.node_type FROM find_prov_precursors('{uri(result)}', 100) AS p"
    )
    nodes = set(walked["activity"]) | {e for e in walked["entity"] if ENTITY_NODE.match(e)}
    assert {r["id"] for r in found} == {uri(n) for n in nodes - {result}}
    assert {r["id"] for r in found if r["node_type"] == "activity"} == {uri(j) for j in jobs}
    kinds = tap(
        science,
        "SELECT e.id, e.kind FROM find_prov_precursors('"
        + uri(result)
        + "', 100) AS p JOIN provenance.entity AS e ON e.id = p.id",
    )
    kind = {r["id"]: r["kind"] for r in kinds}
    assert {i for i, k in kind.items() if k == "upload"} == {uri(e) for e in upload_of}
    assert kind[uri(yml)] == "reference"


def test_a_state_derives_from_its_objects_datapoints_only(science: Server, tiers: Tiers) -> None:
    want = expected()
    url = tiers.steps["t1"]
    t1 = provenance(science, url)
    datapoints = {label(t1, e): e for e, role in used_by(t1, url) if role == "datapoints"}
    assert len(datapoints) == len(want.kept) > 1
    derivations = derived(t1, url)
    object_of = {f"{s}.json": o for o, s in want.states.items()}
    for state in generated_by(t1, url, "states"):
        object_id = object_of[label(t1, state)]
        assert derivations[state] == {datapoints[f"{object_id}.json"]}
    # the index lists every state: made from every datapoints file
    assert derivations[the_one(t1, url, "index")] == set(datapoints.values())


# -- 3. reuse ---------------------------------------------------------------------------------


def state_entities(server: Server, tiers: Tiers) -> list[str]:
    url = tiers.steps["t1"]
    doc = provenance(server, url)
    return sorted(generated_by(doc, url, "states"), key=lambda e: label(doc, e))


def test_the_same_inputs_and_values_reuse_the_results(science: Server, tiers: Tiers) -> None:
    states = state_entities(science, tiers)[:3]  # few: no chunks
    first = science.create("t2_lightcurve_features", RUNID="reuse first", states=states)
    completed(science, first)
    assert reused_from(science, first) is None

    again = science.create("t2_lightcurve_features", RUNID="reuse again", states=states)
    completed(science, again)
    assert reused_from(science, again) == job_id(first)
    doc = provenance(science, again)
    assert f"reused the results of {qname(first)}" in comment_of(doc, again)
    before = provenance(science, first)
    earlier = generated_by(before, first)
    assert sorted(used_by(doc, again)) == sorted(
        [(s, "states") for s in states] + [(e, f"reused_{r}") for e, r in earlier.items()]
    )
    assert checksums(science, again) == checksums(science, first)
    mine = generated_by(doc, again)
    assert set(mine).isdisjoint(earlier)  # entities of its own, derived from the earlier ones
    derivations = derived(doc, again)
    for entity, role in mine.items():
        (source,) = [e for e, r in earlier.items() if r == role]
        assert derivations[entity] == {source}
    body = science.session.get(f"{again}/results/features").content
    assert body == science.session.get(f"{first}/results/features").content
    assert hashlib.sha256(body).hexdigest() == checksums(science, first)["features"]

    # rerun=true runs again (the same numbers: the definition is deterministic)
    rerun = science.create("t2_lightcurve_features", states=states, rerun="true")
    completed(science, rerun)
    assert reused_from(science, rerun) is None
    assert checksums(science, rerun) == checksums(science, first)
    # another input: not reused
    fewer = science.create("t2_lightcurve_features", states=states[:2])
    completed(science, fewer)
    assert reused_from(science, fewer) is None
    assert len(rows(science, fewer, "features")) == 2


def test_a_changed_value_is_not_reused(science: Server, tiers: Tiers) -> None:
    states = state_entities(science, tiers)[:4]
    green = science.create("t2_bazin_fit", states=states, band="g")
    completed(science, green)
    red = science.create("t2_bazin_fit", states=states, band="r")
    completed(science, red)
    assert reused_from(science, green) is None
    assert reused_from(science, red) is None
    assert {r["band"] for r in rows(science, red, "fits")} == {"r"}
    green_again = science.create("t2_bazin_fit", states=states, band="g")
    completed(science, green_again)
    assert reused_from(science, green_again) == job_id(green)
    # the default given explicitly is the same computation
    default = science.create("t2_bazin_fit", states=states)
    completed(science, default)
    assert reused_from(science, default) == job_id(red)

    # the same bytes uploaded again are the same input; another rb_min is not reused
    long_curve = [ztf() / LONG]
    first = science.create("t0_ingest_alerts", files=uploads(long_curve))
    completed(science, first)
    uploaded_again = science.create("t0_ingest_alerts", files=uploads(long_curve))
    completed(science, uploaded_again)
    stricter = science.create("t0_ingest_alerts", rb_min="0.5", files=uploads(long_curve))
    completed(science, stricter)
    assert reused_from(science, first) is None
    assert reused_from(science, uploaded_again) == job_id(first)
    assert reused_from(science, stricter) is None
    assert checksums(science, uploaded_again) == checksums(science, first)


def test_reuse_sees_the_input_file_names_the_unit_sees(science: Server) -> None:
    """The same bytes under another name are not the same computation for t0_ingest_alerts:
    each detection it writes names the alert file it came from ("alert"), and files are
    read in name order (the first copy of a detection wins). The reuse key holds the
    inputs' names with their checksums: a renamed upload runs, and gets what the job
    computes with rerun=true."""
    content = (ztf() / LONG).read_bytes()
    original = science.create("t0_ingest_alerts", files=[("alerts", (LONG, content))])
    completed(science, original)
    renamed = science.create("t0_ingest_alerts", files=[("alerts", ("renamed.avro", content))])
    completed(science, renamed)
    # run, not reused: what the job computes on its input as named
    computed = science.create(
        "t0_ingest_alerts", rerun="true", files=[("alerts", ("renamed.avro", content))]
    )
    completed(science, computed)
    assert reused_from(science, computed) is None
    result = "results/datapoints/ZTF20abyfpze.json"
    alerts = {d["alert"] for d in science.session.get(f"{computed}/{result}").json()["detections"]}
    assert "renamed.avro" in alerts and LONG not in alerts
    given = {d["alert"] for d in science.session.get(f"{renamed}/{result}").json()["detections"]}
    assert given == alerts, (
        f"the renamed upload got the results of job {reused_from(science, renamed)}, "
        f"which name {sorted(given)}"
    )
    assert checksums(science, renamed) == checksums(science, computed)


def test_the_pipeline_again_reuses_t0_to_t2_and_runs_t3(science: Server, tiers: Tiers) -> None:
    again = run_pipeline(science, "tiers again")
    for name in ("t0", "t1", "t2"):
        assert reused_from(science, again.steps[name]) == job_id(tiers.steps[name]), name
    doc = provenance(science, again.steps["t1"])
    roles = {role for _, role in used_by(doc, again.steps["t1"])}
    assert roles == {"datapoints", "reused_states", "reused_index"}
    assert again.chunks == []  # T2 reused whole: no chunks made
    # T3 is not deterministic: it ran again, and its staging upsert changed nothing
    t3 = again.steps["t3"]
    assert reused_from(science, t3) is None
    counts = counts_of(comment_of(provenance(science, t3), t3))
    assert counts["staged_unchanged"] == len(expected().targets)
    assert counts["staged_inserted"] == counts["staged_updated"] == 0
    first = provenance(science, tiers.steps["t3"])
    assert counts_of(comment_of(first, tiers.steps["t3"]))["staged_inserted"] == len(
        expected().targets
    )
    body = science.session.get(f"{again.url}/results/targets_csv").content
    assert body == science.session.get(f"{tiers.url}/results/targets_csv").content


# -- 5. data rights -------------------------------------------------------------------------


def test_partnership_data_needs_the_right(science: Server) -> None:
    (_,) = opus_cli(science, ["group", "add", "ztf", "--right", "ztf_partnership"])
    alice_token, bob_token = opus_cli(
        science, ["user", "add", "alice", "--group", "ztf"], ["user", "add", "bob"]
    )
    alice, bob = as_user(science, alice_token), as_user(science, bob_token)
    partner = [ztf() / PARTNER]
    kept = kept_by_object(partner, partnership=True)["ZTF18abxhyqv"]
    assert kept_by_object(partner) == {}  # without the right nothing is left of it
    dropped = sum(p["programid"] == 2 for _, p in unique_detections(partner).values())
    dropped += sum(p["programid"] == 2 for p in unique_limits(partner).values())
    try:
        with_right = alice.create("t0_ingest_alerts", files=uploads(partner))
        without = bob.create("t0_ingest_alerts", files=uploads(partner))

        doc = completed(alice, with_right)
        assert sorted(result_ids(doc)) == ["datapoints/ZTF18abxhyqv.json", "summary"]
        response = alice.session.get(f"{with_right}/results/datapoints/ZTF18abxhyqv.json")
        detections = response.json()["detections"]
        assert {d["id"] for d in detections} == set(kept)
        assert any(d["programid"] == 2 for d in detections)
        prov = provenance(alice, with_right)
        counts = counts_of(comment_of(prov, with_right))
        assert counts["dropped_partnership"] == 0
        assert counts["detections"] == len(kept)
        assert context_of(prov)["voprov:context_data_rights"] == "ztf_partnership"

        doc = completed(bob, without)
        assert result_ids(doc) == ["summary"]
        prov = provenance(bob, without)
        comment = comment_of(prov, without)
        counts = counts_of(comment)
        assert counts["dropped_partnership"] == dropped == 11
        assert "ztf_partnership right" in comment
        assert counts["objects"] == 0 and counts["objects_without_detections"] == 1
        assert context_of(prov)["voprov:context_data_rights"] == "none"
        summary = bob.session.get(f"{without}/results/summary").json()
        assert summary["dropped"]["partnership"] == dropped
        assert bob.session.get(with_right).status_code == 404  # alice's job is hers
    finally:
        alice.session.close()
        bob.session.close()


# -- 6. gammapy -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gammapy_jobs(science: Server) -> dict[str, str]:
    """The analyses submitted at once (they run side by side)."""
    require_shared("data/hess-dl3-dr1")
    return {
        "maps": science.create("gammapy_maps", **MAPS),
        "spectrum": science.create("gammapy_spectrum", **SPECTRUM),
        "absent": science.create("gammapy_maps", obs_ids=f"23523 {ABSENT_RUN}"),
    }


def check_dl3_provenance(
    server: Server, url: str, obs_ids: list[int], irfs: set[str], results: set[str]
) -> None:
    """A used entity per table read of each DL3 file, named by the file's checksum, with
    its role; the index files; the versions in the context; results from the events."""
    doc = provenance(server, url)
    used = dict(used_by(doc, url))
    data = require_shared("data")
    for obs_id in obs_ids:
        file = run_file(obs_id)
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        path = file.relative_to(data).as_posix()
        tables = {e: role for e, role in used.items() if label(doc, e).startswith(f"{path}[")}
        hdus = {label(doc, e)[len(path) + 1 : -1]: e for e in tables}
        assert set(hdus) == {"EVENTS", "GTI"} | irfs
        for hdu, entity in hdus.items():
            assert entity == f"opus:ref_{digest[:24]}_{hdu}"
            assert sha256_of(doc, entity) == digest
            assert doc["entity"][entity]["voprov:content_type"] == "application/fits"
            assert used[entity] == {"EVENTS": "dl3_events", "GTI": "dl3_gti"}.get(hdu, "irf")
        derivations = derived(doc, url)
        for entity in generated_by(doc, url):
            assert hdus["EVENTS"] in derivations[entity]
    for name in ("obs-index.fits.gz", "hdu-index.fits.gz"):
        digest = hashlib.sha256((data / "hess-dl3-dr1" / name).read_bytes()).hexdigest()
        (entity,) = [e for e in used if e.startswith(f"opus:ref_{digest[:24]}_")]
        assert used[entity] == "dl3_index"
    assert len(used) == len(obs_ids) * (2 + len(irfs)) + 2
    assert set(generated_by(doc, url).values()) == results
    # recorded as reference files (TAP shows the kind PROV-JSON leaves out)
    prefix = doc["prefix"]["opus"]
    listing = ", ".join(f"'{prefix}{e.removeprefix('opus:')}'" for e in used)
    kinds = tap(server, f"SELECT id, kind FROM provenance.entity WHERE id IN ({listing})")
    assert len(kinds) == len(used) and {r["kind"] for r in kinds} == {"reference"}
    context = context_of(doc)
    assert context["voprov:context_unit_gammapy"] == version("gammapy")
    assert context["voprov:context_package_gammapy"] == version("gammapy")


def events_in_map(
    table: Any,
    header: Any,
    wcs: Any,
    shape: tuple[int, int],
    emin: float = 1.0,
    emax: float = 10.0,
    offset_max: float = 2.5,
) -> int:
    """The events of a run a counts map holds (the definition's default energies and
    offset): those of [emin, emax) TeV in a pixel of the map whose centre is within
    offset_max of the run's pointing (as tests/test_units_gammapy.py counts them)."""
    ny, nx = shape
    band = (table["ENERGY"] >= emin) & (table["ENERGY"] < emax)
    x, y = wcs.world_to_pixel(SkyCoord(table["RA"][band], table["DEC"][band], unit="deg"))
    ix, iy = np.floor(x + 0.5).astype(int), np.floor(y + 0.5).astype(int)
    inside = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
    centres = wcs.pixel_to_world(ix[inside], iy[inside])
    pointing = SkyCoord(header["RA_PNT"], header["DEC_PNT"], unit="deg")
    return int((centres.separation(pointing).deg < offset_max).sum())


def counts_map(server: Server, url: str) -> tuple[Any, Any]:
    """A gammapy_maps job's counts map: (data, WCS)."""
    response = server.session.get(f"{url}/results/counts_map")
    assert response.status_code == 200, response.text
    with fits.open(io.BytesIO(response.content)) as hdus:
        return hdus[0].data.copy(), WCS(hdus[0].header)


def test_gammapy_maps_counts_the_events_of_its_pixels(
    science: Server, gammapy_jobs: dict[str, str]
) -> None:
    url = gammapy_jobs["maps"]
    doc = completed(science, url, timeout=100)
    roles = {"counts_map", "background_map", "excess_map", "preview"}
    assert set(result_ids(doc)) == roles
    check_dl3_provenance(science, url, [23523], {"BKG"}, roles)

    counts, wcs = counts_map(science, url)
    assert counts.shape == (100, 100)
    kept = events_in_map(*events(23523), wcs, counts.shape)
    assert kept > 100
    assert int(counts.sum()) == kept
    comment = comment_of(provenance(science, url), url)
    assert counts_of(comment)["events_in_map"] == kept
    centre = wcs.pixel_to_world(49.5, 49.5)
    assert centre.separation(SkyCoord(*CRAB, unit="deg")).deg < 1e-6


def test_gammapy_spectrum_counts_on_events_and_records_its_responses(
    science: Server, gammapy_jobs: dict[str, str]
) -> None:
    url = gammapy_jobs["spectrum"]
    doc = completed(science, url, timeout=110)
    roles = {"spectrum_fits", "spectrum_vot", "fit_result", "plot"}
    assert set(result_ids(doc)) == roles
    check_dl3_provenance(science, url, [23523, 23526], {"AEFF", "EDISP", "PSF"}, roles)

    fit = science.session.get(f"{url}/results/fit_result").json()
    assert sorted(r["obs_id"] for r in fit["runs"]) == [23523, 23526]
    target = SkyCoord(*CRAB, unit="deg")
    total = 0
    for run in fit["runs"]:
        table, _ = events(run["obs_id"])
        energy = table["ENERGY"]
        band = (energy >= run["energy_min_safe"]) & (energy < run["energy_max_safe"])
        near = SkyCoord(table["RA"], table["DEC"], unit="deg").separation(target).deg
        n_on = int((band & (near < 0.11)).sum())  # on_radius: the definition's default
        assert run["n_on"] == n_on > 0
        total += n_on
    assert fit["n_on"] == total
    assert counts_of(comment_of(provenance(science, url), url))["n_on"] == total


def test_a_run_not_in_the_data_store_is_an_error_naming_it(
    science: Server, gammapy_jobs: dict[str, str]
) -> None:
    url = gammapy_jobs["absent"]
    doc = science.wait_final(url, timeout=100)
    assert doc.findtext(f"{UWS}phase") == "ERROR"
    error = science.session.get(f"{url}/error")
    assert error.status_code == 200
    assert f"obs_ids: {ABSENT_RUN} not present" in error.text
    assert "available: 23523 23526" in error.text
    assert "Traceback" not in error.text and "File " not in error.text  # one line, no paths
    assert result_ids(doc) == []


def test_reuse_sees_a_changed_reference_file(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    """gammapy_maps reads DL3 files of the real-data folder, not inputs: its reuse key
    (definition, values, input checksums, rights) does not change when such a file does.
    The job's provenance names each file read by its checksum, and a reuse checks them
    again: after the file changed, an identical job runs on the data now there (also
    when the newest identical job was itself a reuse, which records what it reused read)."""
    data = tmp_path / "real-data"
    shutil.copytree(require_shared("data/hess-dl3-dr1"), data / "hess-dl3-dr1")
    server = start_server({"OPUS_REAL_DATA": str(data)})
    small: dict[str, Any] = {"obs_ids": "23523", "nxpix": "50", "nypix": "50", "binsz": "0.04"}
    first = server.create("gammapy_maps", **small)
    completed(server, first, timeout=90)
    reused = server.create("gammapy_maps", **small)  # the newest identical job: a reuse
    completed(server, reused)
    assert reused_from(server, reused) == job_id(first)

    # the run's events above 3 TeV are gone (a reprocessed release, say)
    path = data / "hess-dl3-dr1" / "data" / run_file(23523).name
    with fits.open(path, lazy_load_hdus=False) as hdus:
        table = hdus["EVENTS"].data
        hdus["EVENTS"].data = table[table["ENERGY"] < 3.0]
        hdus.writeto(path.with_name("changed.fits.gz"))
    path.with_name("changed.fits.gz").replace(path)
    with fits.open(path) as hdus:
        changed, header = hdus["EVENTS"].data.copy(), hdus["EVENTS"].header.copy()

    again = server.create("gammapy_maps", **small)
    completed(server, again, timeout=90)
    counts, wcs = counts_map(server, again)
    expected_counts = events_in_map(changed, header, wcs, counts.shape)
    before, _ = counts_map(server, first)
    assert expected_counts < int(before.sum())  # the change shows in the map
    assert int(counts.sum()) == expected_counts, (
        f"reused the maps of job {reused_from(server, again)}: {int(counts.sum())} events, "
        f"the data now gives {expected_counts}"
    )


# -- 4. chunks on Celery workers --------------------------------------------------------------


@pytest.fixture
def workers(start_server: Callable[..., Server], tmp_path: Path) -> Iterator[Cluster]:
    """A server and Celery workers sharing a Redis database of this module's own."""
    data = require_shared("data")
    require_redis(SCIENCE_REDIS)
    redis.Redis.from_url(SCIENCE_REDIS).flushdb()

    def start(env: dict[str, str]) -> Server:
        return start_server({**env, "OPUS_REAL_DATA": str(data)})

    running = Cluster(start, SCIENCE_REDIS, tmp_path)
    yield running
    running.stop()


def test_two_chunked_jobs_at_once_on_two_runner_slots(workers: Cluster) -> None:
    workers.worker(concurrency=1)
    workers.worker(concurrency=1)
    server = workers.server
    t0 = server.create("t0_ingest_alerts", files=uploads(alert_files()))
    completed(server, t0, timeout=90)
    datapoints = list(generated_by(provenance(server, t0), t0, "datapoints"))
    t1 = server.create("t1_combine_states", datapoints=datapoints)
    completed(server, t1, timeout=60)
    t1_doc = provenance(server, t1)
    states = sorted(generated_by(t1_doc, t1, "states"))
    state_ids = {e: label(t1_doc, e).removesuffix(".json") for e in states}
    assert len(states) == len(expected().kept) > 2 * CHUNK_SIZE

    given = {"all states": states, "all but one": states[1:]}
    parents = {
        run_id: server.create("t2_lightcurve_features", RUNID=run_id, states=inputs)
        for run_id, inputs in given.items()
    }
    for url in parents.values():
        completed(server, url, timeout=100)

    jobs = listed(server, "t2_lightcurve_features")
    for run_id, url in parents.items():
        inputs = given[run_id]
        n = math.ceil(len(inputs) / CHUNK_SIZE)
        assert n >= 3
        chunks = [jobs[f"{run_id} chunk {i}/{n}"] for i in range(1, n + 1)]
        assert {r for r in jobs if r.startswith(f"{run_id} chunk ")} == {
            f"{run_id} chunk {i}/{n}" for i in range(1, n + 1)
        }
        features = rows(server, url, "features")
        assert sorted(r["state_id"] for r in features) == sorted(state_ids[e] for e in inputs)
        doc = provenance(server, url)
        assert reused_from(server, url) is None
        assert f"merged from {n} chunks" in comment_of(doc, url)
        used = used_by(doc, url)
        chunk_rows = 0
        chunk_states: list[str] = []
        for chunk in chunks:
            completed(server, chunk)
            chunk_doc = provenance(server, chunk)
            chunk_states += [e for e, role in used_by(chunk_doc, chunk) if role == "states"]
            for entity, role in generated_by(chunk_doc, chunk).items():
                assert (entity, f"chunk_{role}") in used
            chunk_rows += len(rows(server, chunk, "features"))
        assert sorted(chunk_states) == sorted(inputs)  # the chunks split the states
        assert chunk_rows == len(features) == len(inputs)
        chunk_features = {e for e, role in used if role == "chunk_features"}
        assert len(chunk_features) == n
        assert derived(doc, url)[the_one(doc, url, "features")] == chunk_features

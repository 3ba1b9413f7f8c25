"""Every job's provenance, lineage across jobs, and each format against its validator."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import prov
import prov.model
import pytest
import requests
from lxml import etree

from tests.servers import Server, have

SCHEMAS = Path(prov.__file__).parent / "tests" / "schemas"


@dataclass
class Chain:
    """hello -> append -> append: each job uses the previous job's result."""

    jobs: list[str]  # job URLs
    outputs: list[str]  # qualified ids of each job's result entity


def job_id(url: str) -> str:
    return url.rsplit("/", 1)[-1]


def prov_json(server: Server, url: str, **params: str) -> dict:
    response = server.session.get(url, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    return response.json()


def result_entity(server: Server, job_url: str) -> str:
    doc = prov_json(server, f"{job_url}/provenance")
    generated = [g["prov:entity"] for g in doc.get("wasGeneratedBy", {}).values()]
    assert len(generated) == 1, doc
    return generated[0]


@pytest.fixture(scope="module")
def chain(server: Server) -> Chain:
    first = server.create("hello", name="Lineage")
    server.wait_final(first)
    jobs, outputs = [first], [result_entity(server, first)]
    for step in range(2):
        previous = f"{jobs[-1]}/results/" + ("greeting" if step == 0 else "output")
        url = server.create("opus_append", input=previous, text=f"step {step}")
        assert server.wait_final(url).findtext("{http://www.ivoa.net/xml/UWS/v1.0}phase") == (
            "COMPLETED"
        )
        jobs.append(url)
        outputs.append(result_entity(server, url))
    return Chain(jobs, outputs)


def provsap(server: Server, **params: str) -> requests.Response:
    return server.session.get(f"{server.url}/provsap", params=params)


def activities(doc: dict) -> set[str]:
    return set(doc.get("activity", {}))


def entities(doc: dict) -> set[str]:
    return set(doc.get("entity", {}))


def test_a_result_used_later_is_the_same_entity(server: Server, chain: Chain) -> None:
    second = prov_json(server, f"{chain.jobs[1]}/provenance")
    used = [u["prov:entity"] for u in second["used"].values()]
    assert used == [chain.outputs[0]]
    derived = [
        (d["prov:generatedEntity"], d["prov:usedEntity"])
        for d in second.get("wasDerivedFrom", {}).values()
    ]
    assert (chain.outputs[1], chain.outputs[0]) in derived


def test_recorded_sha256_is_the_served_bytes(server: Server, chain: Chain) -> None:
    for url, entity in zip(chain.jobs, chain.outputs, strict=True):
        record = prov_json(server, f"{url}/provenance")["entity"][entity]
        assert record["prov:location"].startswith(f"{server.url}/store/")
        served = server.session.get(record["prov:location"])
        assert served.status_code == 200
        assert hashlib.sha256(served.content).hexdigest() == record["voprov:sha256"]
        size = record["voprov:content_size"]
        assert int(size["$"] if isinstance(size, dict) else size) == len(served.content)


def test_lineage_back_by_depth(server: Server, chain: Chain) -> None:
    last = chain.outputs[2]
    depth1 = provsap(server, ID=last, DEPTH="1", DIRECTION="BACK").json()
    assert activities(depth1) == {f"opus:job_{job_id(chain.jobs[2])}"}
    assert chain.outputs[1] not in entities(depth1)
    depth2 = provsap(server, ID=last, DEPTH="2").json()  # BACK is the default
    assert chain.outputs[1] in entities(depth2)
    assert f"opus:job_{job_id(chain.jobs[1])}" not in activities(depth2)
    everything = provsap(server, ID=last, DEPTH="ALL").json()
    assert activities(everything) == {f"opus:job_{job_id(u)}" for u in chain.jobs}
    assert set(chain.outputs) <= entities(everything)


def test_lineage_forth(server: Server, chain: Chain) -> None:
    first = chain.outputs[0]
    depth1 = provsap(server, ID=first, DEPTH="1", DIRECTION="FORTH").json()
    assert activities(depth1) == {f"opus:job_{job_id(chain.jobs[1])}"}
    everything = provsap(server, ID=first, DEPTH="ALL", DIRECTION="FORTH").json()
    assert activities(everything) == {f"opus:job_{job_id(u)}" for u in chain.jobs[1:]}
    assert chain.outputs[2] in entities(everything)


def test_ids_may_be_bare_job_ids(server: Server, chain: Chain) -> None:
    doc = provsap(
        server, id=job_id(chain.jobs[1]), depth="0", direction="forth", Unknown="ignored"
    ).json()
    assert activities(doc) == {f"opus:job_{job_id(chain.jobs[1])}"}


def test_prov_json_is_valid_and_reads_back_equal(server: Server, chain: Chain) -> None:
    schema = json.loads((SCHEMAS / "prov-json.schema.json").read_text())
    response = provsap(server, ID=chain.outputs[2], DEPTH="ALL")
    document = response.json()
    jsonschema.validate(document, schema)
    first = prov.model.ProvDocument.deserialize(content=response.text, format="json")
    again = prov.model.ProvDocument.deserialize(
        content=first.serialize(format="json"), format="json"
    )
    assert first == again
    assert len(list(first.get_records(prov.model.ProvActivity))) == 3


def test_prov_n_reads_with_the_strict_parser(server: Server, chain: Chain) -> None:
    response = provsap(server, ID=chain.outputs[2], DEPTH="ALL", RESPONSEFORMAT="PROV-N")
    assert response.headers["Content-Type"].startswith("text/provenance-notation")
    parsed = prov.model.ProvDocument.deserialize(content=response.text, format="provn")
    from_json = prov.model.ProvDocument.deserialize(
        content=provsap(server, ID=chain.outputs[2], DEPTH="ALL").text, format="json"
    )
    assert len(parsed.records) == len(from_json.records)


def test_prov_xml_is_valid_against_prov_xsd(server: Server, chain: Chain) -> None:
    schema = etree.XMLSchema(etree.parse(str(SCHEMAS / "prov.xsd")))
    for model in ("IVOA", "W3C"):
        response = provsap(
            server, ID=chain.outputs[2], DEPTH="ALL", RESPONSEFORMAT="PROV-XML", MODEL=model
        )
        doc = etree.fromstring(response.content)
        assert schema.validate(doc), schema.error_log


def test_ivoa_model_has_descriptions_and_parameters_w3c_does_not(
    server: Server, chain: Chain
) -> None:
    ivoa = prov_json(server, f"{chain.jobs[1]}/provenance", MODEL="IVOA")
    types = {
        str(e.get("prov:type", {}).get("$"))
        for e in ivoa["entity"].values()
        if isinstance(e.get("prov:type"), dict)
    }
    assert {"voprov:ActivityDescription", "voprov:Parameter", "voprov:Context"} <= types
    parameters = [
        e for e in ivoa["entity"].values() if e.get("prov:type", {}).get("$") == "voprov:Parameter"
    ]
    assert {(p["voprov:name"], p["prov:value"]) for p in parameters} == {("text", "step 0")}
    w3c = prov_json(server, f"{chain.jobs[1]}/provenance", MODEL="W3C")
    assert not any("voprov:Parameter" in json.dumps(e) for e in w3c["entity"].values())
    agents = {a["prov:label"] for a in w3c["agent"].values()}
    assert {"anonymous", "OPUS", "test-admin"} <= agents


def test_a_failed_job_has_its_provenance(server: Server) -> None:
    url = server.create("failing", reason="broken disk")
    server.wait_final(url)
    doc = prov_json(server, f"{url}/provenance")
    activity = doc["activity"][f"opus:job_{job_id(url)}"]
    assert activity["voprov:status"] == "ERROR"
    assert "broken disk" in activity["voprov:comment"]


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"ID": "x", "DEPTH": "deep"}, "DEPTH"),
        ({"ID": "x", "DIRECTION": "UP"}, "DIRECTION"),
        ({"ID": "x", "MODEL": "CAOM"}, "MODEL"),
        ({"ID": "x", "RESPONSEFORMAT": "text/html"}, "RESPONSEFORMAT"),
        ({"ID": "x", "AGENT": "perhaps"}, "AGENT"),
        ({"DEPTH": "1"}, "ID"),
    ],
)
def test_provsap_bad_values_are_400(server: Server, params: dict[str, str], name: str) -> None:
    response = provsap(server, **params)
    assert response.status_code == 400
    assert name in response.text


def test_provsap_unknown_id_is_404(server: Server) -> None:
    response = provsap(server, ID="opus:ent_0000000000000000")
    assert response.status_code == 404
    assert "opus:ent_0000000000000000" in response.text


def test_pending_job_has_no_provenance_yet(server: Server) -> None:
    url = server.create("hello", run=False)
    response = server.session.get(f"{url}/provenance")
    assert response.status_code == 404
    assert "not run" in response.text


def test_prov_votable_passes_votlint(server: Server, chain: Chain, tmp_path: Path) -> None:
    stilts = have("stilts")
    response = provsap(server, ID=chain.outputs[2], DEPTH="ALL", RESPONSEFORMAT="PROV-VOTABLE")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/x-votable+xml")
    path = tmp_path / "prov.vot"
    path.write_bytes(response.content)
    out = subprocess.run([stilts, "votlint", str(path)], capture_output=True, text=True)
    assert [line for line in (out.stdout + out.stderr).splitlines() if line.strip()] == []
    doc = etree.fromstring(response.content)
    ns = {"v": "http://www.ivoa.net/xml/VOTable/v1.3"}
    tables = {t.get("name"): t for t in doc.iterfind(".//v:TABLE", ns)}
    assert {
        "Activity",
        "Entity",
        "Agent",
        "Used",
        "WasGeneratedBy",
        "WasAssociatedWith",
        "WasDerivedFrom",
        "ActivityDescription",
        "Parameter",
        "WasConfiguredBy",
    } <= set(tables)
    assert all(t.get("utype", "").startswith("voprov:") for t in tables.values())
    ids = [f.get("ID") for f in doc.iterfind(".//v:FIELD", ns)]
    assert len(ids) == len(set(ids))
    assert all(f.get("utype", "").startswith("voprov:") for f in doc.iterfind(".//v:FIELD", ns))
    activity_ids = {tr[0].text for tr in tables["Activity"].iterfind(".//v:TR", ns)}
    assert activity_ids == {f"opus:job_{job_id(u)}" for u in chain.jobs}


def test_prov_svg_draws_the_graph(server: Server, chain: Chain) -> None:
    have("dot")
    response = provsap(server, ID=chain.outputs[2], DEPTH="ALL", RESPONSEFORMAT="PROV-SVG")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("image/svg+xml")
    svg = etree.fromstring(response.content)
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    text = " ".join(svg.itertext())
    assert "hello" in text and "opus_append" in text


def test_prov_svg_without_graphviz_is_503(start_server: Callable[..., Server]) -> None:
    """A server whose PATH has no `dot`: a clear 503, never a 500."""
    python_dir = str(Path(sys.executable).parent)
    own = start_server({"PATH": f"{python_dir}:/usr/sbin:/sbin"})
    url = own.create("hello", name="nodot")
    own.wait_final(url)
    response = own.session.get(f"{url}/provenance", params={"RESPONSEFORMAT": "PROV-SVG"})
    assert response.status_code == 503
    assert "dot" in response.text


def test_provsap_vosi(server: Server) -> None:
    assert (
        b"<vosi:available>true" in server.session.get(f"{server.url}/provsap/availability").content
    )
    capabilities = server.session.get(f"{server.url}/provsap/capabilities").text
    assert "ivo://ivoa.net/std/ProvSAP" in capabilities


def run_export(server: Server, *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "opus.cli", "prov", "export", *args],
        env=dict(server.env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def test_prov_export_writes_files_and_an_index(
    server: Server, chain: Chain, tmp_path: Path
) -> None:
    out = tmp_path / "all"
    run_export(server, "--out", str(out), "--format", "PROV-N")
    with (out / "index.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    exported = {row["id"] for row in rows}
    assert {f"opus:job_{job_id(u)}" for u in chain.jobs} <= exported
    for row in rows:
        body = (out / row["file"]).read_bytes()
        assert hashlib.sha256(body).hexdigest() == row["sha256"]
        prov.model.ProvDocument.deserialize(content=body.decode(), format="provn")

    one = tmp_path / "one"
    run_export(
        server, "--out", str(one), "--entity", chain.outputs[2], "--job", job_id(chain.jobs[0])
    )
    files = sorted(p.name for p in one.iterdir())
    assert files == sorted(
        [
            "index.csv",
            f"opus_job_{job_id(chain.jobs[0])}.json",
            chain.outputs[2].replace(":", "_") + ".json",
        ]
    )
    lineage = json.loads((one / (chain.outputs[2].replace(":", "_") + ".json")).read_text())
    assert activities(lineage) == {f"opus:job_{job_id(u)}" for u in chain.jobs}


def test_prov_export_since(server: Server, chain: Chain, tmp_path: Path) -> None:
    out = tmp_path / "since"
    run_export(server, "--out", str(out), "--since", "2999-01-01T00:00:00Z")
    assert (out / "index.csv").read_text().strip() == "kind,id,file,bytes,sha256"

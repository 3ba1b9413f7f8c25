"""Identifiers that survive leaving the server: the prefix `opus` of every document stands
for `<base>/prov/`, every location is a URL that serves the bytes, every `opus:` name
resolves at `<base>/prov/<local>` (as far as the reader may see), in every format, in a
job's /provenance, in ProvSAP and in `opus prov export`. End to end, on real servers."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jsonschema
import prov
import prov.model
import pytest
import requests
from lxml import etree

from opus.phases import FINAL
from tests.servers import ROOT, Server, have, new_user

SCHEMAS = Path(prov.__file__).parent / "tests" / "schemas"
PROV = "{http://www.w3.org/ns/prov#}"
VOTABLE = {"v": "http://www.ivoa.net/xml/VOTable/v1.3"}
UWS = "{http://www.ivoa.net/xml/UWS/v1.0}"
PUBLIC = "https://archive.example.org/opus"  # where a server says it is, behind a proxy


@dataclass
class Chain:
    """hello -> opus_append: the second job uses the first one's result."""

    jobs: list[str]  # job URLs
    results: list[str]  # the qualified name of each job's result


def job_id(url: str) -> str:
    return url.rsplit("/", 1)[-1]


def prov_json(session: requests.Session, url: str, **params: str) -> dict[str, Any]:
    response = session.get(url, params=params)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def result_of(server: Server, job_url: str) -> str:
    doc = prov_json(server.session, f"{job_url}/provenance")
    return str(next(iter(doc["wasGeneratedBy"].values()))["prov:entity"])


def run_chain(server: Server, first_input: str | None = None) -> Chain:
    """Two jobs: hello (or opus_append of `first_input`, a URL), then opus_append of the
    first one's result, given by its URL on this server."""
    if first_input is None:
        first = server.create("hello", name="public ids")
        output = "greeting"
    else:
        first = server.create("opus_append", input=first_input, text="first")
        output = "output"
    assert server.wait_final(first).findtext(f"{UWS}phase") == "COMPLETED"
    second = server.create("opus_append", input=f"{first}/results/{output}", text="second")
    assert server.wait_final(second).findtext(f"{UWS}phase") == "COMPLETED"
    return Chain([first, second], [result_of(server, first), result_of(server, second)])


@pytest.fixture(scope="module")
def chain(server: Server) -> Chain:
    return run_chain(server)


def provsap(server: Server, **params: str) -> requests.Response:
    return server.session.get(f"{server.url}/provsap", params=params)


def lineage(server: Server, chain: Chain, response_format: str) -> requests.Response:
    response = provsap(server, ID=chain.results[-1], DEPTH="ALL", RESPONSEFORMAT=response_format)
    assert response.status_code == 200, response.text
    return response


def recorded(server: Server, chain: Chain) -> dict[str, dict[str, Any]]:
    """The entities of the lineage that are files, by location (from PROV-JSON)."""
    entities = lineage(server, chain, "PROV-JSON").json()["entity"].values()
    return {e["prov:location"]: e for e in entities if "prov:location" in e}


# -- what each format says -------------------------------------------------------------------


def namespaces_and_locations(
    response_format: str, body: bytes, tmp_path: Path
) -> tuple[dict[str, str], set[str]]:
    """The prefixes a document declares and the locations it gives, each format read by
    its own validator or reader."""
    if response_format == "PROV-JSON":
        doc = json.loads(body)
        jsonschema.validate(doc, json.loads((SCHEMAS / "prov-json.schema.json").read_text()))
        entities = doc["entity"].values()
        return doc["prefix"], {e["prov:location"] for e in entities if "prov:location" in e}
    if response_format == "PROV-N":
        parsed = prov.model.ProvDocument.deserialize(content=body.decode(), format="provn")
        found = {ns.prefix: ns.uri for ns in parsed.get_registered_namespaces()}
        locations = {
            str(value)
            for record in parsed.get_records(prov.model.ProvEntity)
            for value in record.get_attribute("prov:location")
        }
        return found, locations
    if response_format == "PROV-XML":
        root = etree.fromstring(body)
        schema = etree.XMLSchema(etree.parse(str(SCHEMAS / "prov.xsd")))
        assert schema.validate(root), schema.error_log
        locations = {str(e.text) for e in root.iter(f"{PROV}location")}
        return {k: v for k, v in root.nsmap.items() if k}, locations
    assert response_format == "PROV-VOTABLE"
    path = tmp_path / "prov.vot"
    path.write_bytes(body)
    out = subprocess.run([have("stilts"), "votlint", str(path)], capture_output=True, text=True)
    assert [line for line in (out.stdout + out.stderr).splitlines() if line.strip()] == []
    root = etree.fromstring(body)
    found = {
        str(info.get("name")).removeprefix("prefix:"): str(info.get("value"))
        for info in root.iterfind(".//v:INFO", VOTABLE)
        if str(info.get("name")).startswith("prefix:")
    }
    table = root.find(".//v:TABLE[@name='Entity']", VOTABLE)
    assert table is not None
    column = [f.get("name") for f in table.iterfind("v:FIELD", VOTABLE)].index("location")
    locations = {str(tr[column].text) for tr in table.iterfind(".//v:TR", VOTABLE)}
    return found, locations - {"None", ""}


FORMATS = ["PROV-JSON", "PROV-N", "PROV-XML", "PROV-VOTABLE"]


@pytest.mark.parametrize("response_format", FORMATS)
def test_every_format_carries_the_servers_namespace_and_absolute_locations(
    server: Server, chain: Chain, response_format: str, tmp_path: Path
) -> None:
    files = recorded(server, chain)
    body = lineage(server, chain, response_format).content
    found, locations = namespaces_and_locations(response_format, body, tmp_path)
    assert found["opus"] == f"{server.url}/prov/"
    assert locations == set(files)
    for location in locations:
        assert location.startswith(f"{server.url}/store/"), location
        served = requests.get(location, timeout=30)  # a plain client: nothing but the URL
        assert served.status_code == 200
        assert hashlib.sha256(served.content).hexdigest() == files[location]["voprov:sha256"]


def test_prov_svg_shows_the_absolute_locations(server: Server, chain: Chain) -> None:
    have("dot")
    svg = lineage(server, chain, "PROV-SVG").text
    for location in recorded(server, chain):
        assert location in svg


def test_a_jobs_provenance_carries_them_too(server: Server, chain: Chain) -> None:
    for url, entity in zip(chain.jobs, chain.results, strict=True):
        doc = prov_json(server.session, f"{url}/provenance")
        assert doc["prefix"]["opus"] == f"{server.url}/prov/"
        location = doc["entity"][entity]["prov:location"]
        assert location == f"{server.url}/store/{entity.removeprefix('opus:ent_')}"
        provn = server.session.get(f"{url}/provenance", params={"RESPONSEFORMAT": "PROV-N"})
        assert f"prefix opus <{server.url}/prov/>" in provn.text
        assert f'prov:location="{location}"' in provn.text


# -- every name resolves ---------------------------------------------------------------------


def wait_final(session: requests.Session, url: str, timeout: float = 30) -> str:
    """WAIT as this client until the job is in a final phase; the phase."""
    end = time.monotonic() + timeout
    while True:
        response = session.get(url, params={"WAIT": "5"}, timeout=timeout + 10)
        phase = str(etree.fromstring(response.content).findtext(f"{UWS}phase"))
        if phase in FINAL:
            return phase
        assert time.monotonic() < end, f"job still {phase} after {timeout} s"


def see_other(url: str, session: requests.Session | None = None) -> str:
    """Where a /prov/ URL sends its reader (a 303)."""
    response = (session or requests).get(url, allow_redirects=False, timeout=30)
    assert response.status_code == 303, (url, response.status_code, response.text)
    return str(response.headers["Location"])


def test_entity_and_job_names_resolve(server: Server, chain: Chain) -> None:
    namespace = f"{server.url}/prov/"
    for url, entity in zip(chain.jobs, chain.results, strict=True):
        local = entity.removeprefix("opus:")
        stored = see_other(namespace + local)
        assert stored == f"{server.url}/store/{local.removeprefix('ent_')}"
        assert requests.get(namespace + local, timeout=30).content == (
            server.session.get(stored).content
        )
        job = see_other(f"{namespace}job_{job_id(url)}")
        assert job == url  # the job's UWS resource
        followed = requests.get(f"{namespace}job_{job_id(url)}", timeout=30)
        assert etree.fromstring(followed.content).findtext(f"{UWS}jobId") == job_id(url)


def test_every_name_of_a_document_resolves(server: Server, chain: Chain) -> None:
    """Agents, descriptions, parameters, contexts: each is its ProvSAP document."""
    doc = prov_json(server.session, f"{chain.jobs[1]}/provenance", MODEL="IVOA")
    namespace = doc["prefix"]["opus"]
    names = [n for kind in ("activity", "entity", "agent") for n in doc.get(kind, {})]
    others = [n for n in names if not n.startswith(("opus:job_", "opus:ent_")) or "_par_" in n]
    assert len(others) >= 5, names  # owner, server, worker, description, context, parameter
    for name in names:
        assert name.startswith("opus:"), name
        location = see_other(namespace + name.removeprefix("opus:"))
        if name in others:
            assert location == (
                f"{server.url}/provsap?ID={quote(name, safe=':')}&RESPONSEFORMAT=PROV-JSON"
            )
            shown = prov_json(requests.Session(), location)
            assert any(name in shown.get(kind, {}) for kind in ("entity", "agent")), name
        assert requests.get(location, timeout=30).status_code == 200


@pytest.mark.parametrize(
    "local", ["ent_0000000000000000", "job_0000000000000000", "hidden_1", "nothing", "job_x"]
)
def test_unknown_names_are_404(server: Server, local: str) -> None:
    response = requests.get(f"{server.url}/prov/{local}", allow_redirects=False, timeout=30)
    assert response.status_code == 404, response.text


def test_hidden_names_are_404(server: Server) -> None:
    """A user's job is hidden from anyone else: its names do not resolve for them (as
    unknown ones), they do for its owner."""
    name = f"pid{secrets.token_hex(3)}"  # the session server outlives this test
    owner = requests.Session()
    owner.auth = (name, new_user(server, name))
    created = owner.post(
        f"{server.url}/rest/hello", data={"PHASE": "RUN", "name": "mine"}, allow_redirects=False
    )
    url = created.headers["Location"]
    assert wait_final(owner, url) == "COMPLETED"
    entity = next(iter(prov_json(owner, f"{url}/provenance")["wasGeneratedBy"].values()))[
        "prov:entity"
    ]
    names = [f"job_{job_id(url)}", entity.removeprefix("opus:"), f"job_{job_id(url)}_par_name"]
    for local in names:
        hidden = requests.get(f"{server.url}/prov/{local}", allow_redirects=False, timeout=30)
        assert hidden.status_code == 404, (local, hidden.text)
        assert see_other(f"{server.url}/prov/{local}", owner).startswith(server.url)
    assert provsap(server, ID=f"{server.url}/prov/{names[1]}").status_code == 404
    assert owner.get(f"{server.url}/provsap", params={"ID": entity}).status_code == 200


# -- ProvSAP takes every form of an id -------------------------------------------------------


def test_provsap_id_may_be_the_full_uri(server: Server, chain: Chain) -> None:
    local = chain.results[-1].removeprefix("opus:")
    given = {
        form: provsap(server, ID=form, DEPTH="ALL").json()
        for form in (f"opus:{local}", f"{server.url}/prov/{local}", f"urn:opus:{local}")
    }
    first, *others = given.values()
    assert len(first["activity"]) == 2
    assert all(doc == first for doc in others)
    job = f"{server.url}/prov/job_{job_id(chain.jobs[0])}"
    assert set(provsap(server, ID=job, DEPTH="0").json()["activity"]) == {
        f"opus:job_{job_id(chain.jobs[0])}"
    }


# -- OPUS_PUBLIC_URL -------------------------------------------------------------------------


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A plain HTTP server on loopback: files elsewhere, given to jobs by URL."""
    folder = tmp_path / "archive"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", folder
    httpd.shutdown()


def test_public_url_is_what_documents_carry(
    start_server: Callable[..., Server], archive: tuple[str, Path], tmp_path: Path
) -> None:
    """Behind a proxy: the documents say the public URL, whatever URL the request used;
    a location that was a URL already (a download) stays as it is."""
    server = start_server({"OPUS_PUBLIC_URL": PUBLIC + "/", "OPUS_FETCH_ALLOW_HOSTS": "127.0.0.1"})
    base, folder = archive
    (folder / "remote.txt").write_text("from elsewhere\n")
    chain = run_chain(server, f"{base}/remote.txt")
    namespace = f"{PUBLIC}/prov/"
    for response_format in FORMATS:
        body = lineage(server, chain, response_format).content
        found, locations = namespaces_and_locations(response_format, body, tmp_path)
        assert found["opus"] == namespace, response_format
        assert f"{base}/remote.txt" in locations, response_format  # downloaded: as it was
        stored = locations - {f"{base}/remote.txt"}
        assert len(stored) == 2 and all(loc.startswith(f"{PUBLIC}/store/") for loc in stored)
    local = chain.results[-1].removeprefix("opus:")
    assert see_other(f"{server.url}/prov/{local}") == (
        f"{PUBLIC}/store/{local.removeprefix('ent_')}"
    )
    job = f"job_{job_id(chain.jobs[1])}"
    assert (
        see_other(f"{server.url}/prov/{job}")
        == f"{PUBLIC}/rest/opus_append/{job_id(chain.jobs[1])}"
    )
    by_uri = provsap(server, ID=namespace + local, DEPTH="ALL").json()
    assert by_uri == provsap(server, ID=chain.results[-1], DEPTH="ALL").json()
    assert provsap(server, ID=f"{server.url}/prov/{local}").status_code == 404  # not its name


# -- opus prov export ------------------------------------------------------------------------


def export(server: Server, out: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "opus.cli", "prov", "export", "--out", str(out), *args],
        env={k: v for k, v in server.env.items() if k != "OPUS_PUBLIC_URL"} | env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    return done


def exported(out: Path, chain: Chain) -> dict[str, Any]:
    name = f"opus_job_{job_id(chain.jobs[1])}.json"
    found: dict[str, Any] = json.loads((out / name).read_text())
    return found


def test_prov_export_takes_the_base_url(server: Server, chain: Chain, tmp_path: Path) -> None:
    job = job_id(chain.jobs[1])
    entity = chain.results[-1]
    done = export(server, tmp_path / "plain", "--job", job)
    assert "urn:opus:" in done.stderr and "OPUS_PUBLIC_URL" in done.stderr
    plain = exported(tmp_path / "plain", chain)
    assert plain["prefix"]["opus"] == "urn:opus:"
    assert plain["entity"][entity]["prov:location"] == f"/store/{entity.removeprefix('opus:ent_')}"

    for out, args, env in [
        (tmp_path / "option", ["--base-url", PUBLIC], {}),
        (tmp_path / "env", [], {"OPUS_PUBLIC_URL": PUBLIC}),
    ]:
        done = export(server, out, "--job", job, "--format", "PROV-JSON", *args, **env)
        assert "urn:opus:" not in done.stderr
        doc = exported(out, chain)
        assert doc["prefix"]["opus"] == f"{PUBLIC}/prov/"
        assert doc["entity"][entity]["prov:location"] == (
            f"{PUBLIC}/store/{entity.removeprefix('opus:ent_')}"
        )
    export(server, tmp_path / "n", "--job", job, "--format", "PROV-N", "--base-url", PUBLIC)
    text = (tmp_path / "n" / f"opus_job_{job}.provn").read_text()
    prov.model.ProvDocument.deserialize(content=text, format="provn")
    assert f"prefix opus <{PUBLIC}/prov/>" in text

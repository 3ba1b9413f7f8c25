"""Identities end to end, against real servers: users, tokens and groups made with the
`opus user` and `opus group` commands; the one visibility rule on every door (UWS, its
sub-resources, /store, inputs, ProvSAP, `opus prov export`); definitions restricted to
groups and the data rights a job runs with; per-user limits; pyvo and `opus submit`
as clients.

One server with anonymous access off serves the module (users alice, carol in group
ztf; bob; root, an admin; and users with limits); the suite's session server (anonymous
access on, on loopback) serves the anonymous-mode tests.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import prov.model
import pytest
import requests
import sqlalchemy
from lxml import etree

from opus.auth import CACHE_SECONDS
from opus.phases import FINAL
from tests import test_uws_api
from tests.servers import ROOT, Server, assert_valid, launch, opus_all
from tests.test_provenance import SCHEMAS

pyvo = pytest.importorskip("pyvo")
from pyvo.auth import AuthSession  # noqa: E402
from pyvo.io.uws import parse_job, parse_job_list  # noqa: E402
from pyvo.io.vosi import parse_capabilities  # noqa: E402

UWS = "{http://www.ivoa.net/xml/UWS/v1.0}"
VOTABLE = "{http://www.ivoa.net/xml/VOTable/v1.3}"
BASIC_AA = "ivo://ivoa.net/sso#BasicAA"
TOKEN = "ivo://ivoa.net/sso#token"
NO_SUCH_ID = "ffffffffffffffff"  # an id of the right form that names nothing
TOKEN_FORM = re.compile(r"^opus_([0-9a-f]+)\.([A-Za-z0-9_-]+)$")
PROV_FORMATS = ("PROV-JSON", "PROV-N", "PROV-XML", "PROV-VOTABLE")


# -- helpers --------------------------------------------------------------------------------


def opus(
    server: Server, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The real `opus` command, run on the server's machine (its OPUS_* settings)."""
    return subprocess.run(
        [sys.executable, "-m", "opus.cli", *args],
        env=env if env is not None else dict(server.env),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def client_env(**extra: str) -> dict[str, str]:
    """The environment of a client on another machine: no server settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("OPUS_")} | extra


def token_of(done: subprocess.CompletedProcess[str]) -> str:
    """The token `opus user add` or `opus user token` printed on its last line."""
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def token_parts(token: str) -> tuple[str, str]:
    """(key, secret) of an OPUS token."""
    match = TOKEN_FORM.match(token)
    assert match, token
    return match.group(1), match.group(2)


def job_id(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def same_but_ids(one: str, other: str, *ids: str) -> bool:
    """Two error texts are the same once the ids in them are blanked."""
    for value in ids:
        one, other = one.replace(value, "<id>"), other.replace(value, "<id>")
    return one == other


def assert_status(response: requests.Response, status: int, *words: str) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    assert "Traceback" not in response.text
    for word in words:
        assert word.lower() in response.text.lower(), (word, response.text)


def challenges(response: requests.Response) -> list[str]:
    found: list[str] = response.raw.headers.getlist("WWW-Authenticate")
    return found


def basic(user: str, token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Client:
    """A user of a server, sending HTTP Basic user:token."""

    name: str
    token: str
    base: str
    session: requests.Session = field(default_factory=requests.Session)

    def __post_init__(self) -> None:
        self.session.auth = (self.name, self.token)

    def rest(self, jobdef: str) -> str:
        return f"{self.base}/rest/{jobdef}"

    def get(self, url: str, **params: str) -> requests.Response:
        return self.session.get(url, params=params, allow_redirects=False, timeout=30)

    def post(self, url: str, data: dict[str, str] | None = None) -> requests.Response:
        return self.session.post(url, data=data, allow_redirects=False, timeout=30)

    def create(self, jobdef: str, run: bool = True, **params: str) -> str:
        data = dict(params) | ({"PHASE": "RUN"} if run else {})
        response = self.post(self.rest(jobdef), data)
        assert response.status_code == 303, (response.status_code, response.text)
        return str(response.headers["Location"])

    def wait_final(self, url: str, timeout: float = 30) -> etree._Element:
        end = time.monotonic() + timeout
        while True:
            response = self.get(url, WAIT="5")
            assert response.status_code == 200, response.text
            doc = etree.fromstring(response.content)
            phase = doc.findtext(f"{UWS}phase")
            if phase in FINAL:
                return doc
            assert time.monotonic() < end, f"job still {phase} after {timeout} s"

    def completed(self, url: str) -> etree._Element:
        doc = self.wait_final(url)
        assert doc.findtext(f"{UWS}phase") == "COMPLETED", etree.tostring(doc)
        return doc

    def listed(self, jobdef: str, params: Sequence[tuple[str, str]] = ()) -> list[str]:
        response = self.session.get(self.rest(jobdef), params=list(params), timeout=30)
        assert response.status_code == 200, response.text
        return [str(r.get("id")) for r in etree.fromstring(response.content).iter(f"{UWS}jobref")]

    def result_entity(self, job_url: str) -> str:
        """The bare id of the job's one result entity, read from its provenance."""
        response = self.get(f"{job_url}/provenance")
        assert response.status_code == 200, response.text
        generated = [g["prov:entity"] for g in response.json()["wasGeneratedBy"].values()]
        assert len(generated) == 1, generated
        return str(generated[0]).removeprefix("opus:ent_")


def context_of(doc: dict[str, object]) -> dict[str, object]:
    """The voprov:Context entity of a job's PROV-JSON."""
    entities = doc["entity"]
    assert isinstance(entities, dict)
    found = [
        e
        for e in entities.values()
        if isinstance(e.get("prov:type"), dict) and e["prov:type"]["$"] == "voprov:Context"
    ]
    assert len(found) == 1, entities
    return dict(found[0])


# -- the server and its identities ----------------------------------------------------------


@dataclass
class Site:
    server: Server
    users: dict[str, Client]

    def __getitem__(self, name: str) -> Client:
        return self.users[name]

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A server with anonymous access off, its groups and users made with the CLI."""
    server = launch(tmp_path_factory.mktemp("identities"), {"OPUS_ALLOW_ANONYMOUS": "false"})
    try:
        for done in opus_all(
            server,
            ["group", "add", "ztf", "--right", "ztf_partnership"],
            ["group", "add", "short", "--max-duration", "7"],
        ):
            assert done.returncode == 0, done.stderr
        users = {
            "alice": ["--group", "ztf"],
            "carol": ["--group", "ztf"],
            "bob": [],
            "root": ["--admin"],
            "lim": ["--max-active", "1"],
            "brief": ["--max-duration", "5"],
            "dora": ["--group", "short"],
        }
        made = opus_all(server, *(["user", "add", name, *args] for name, args in users.items()))
        clients = {
            name: Client(name, token_of(done), server.url)
            for name, done in zip(users, made, strict=True)
        }
        yield Site(server, clients)
        for client in clients.values():
            client.session.close()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def anonymous_site(server: Server) -> Iterator[tuple[Server, Client]]:
    """The session server (anonymous access on, on loopback) and a user of it."""
    name = f"erin{secrets.token_hex(3)}"  # the session server outlives this module
    erin = Client(name, token_of(opus(server, "user", "add", name)), server.url)
    yield server, erin
    erin.session.close()


# -- 1. identities ------------------------------------------------------------------------


def test_tokens_are_shown_once_and_kept_hashed(site: Site) -> None:
    tokens = [c.token for c in site.users.values()]
    keys = set()
    for token in tokens:
        key, secret = token_parts(token)
        keys.add(key)
        assert len(secret) * 6 >= 128, token  # base64url: 6 bits a character
    assert len(keys) == len(tokens)  # a key tells tokens apart

    alice = site["alice"]
    assert alice.get(alice.rest("hello")).status_code == 200  # the token has been used
    key, secret = token_parts(alice.token)
    files = [p for p in site.server.data_dir.rglob("*") if p.is_file()]
    assert site.server.log in files and "serving" in site.server.log.read_text()
    for path in files:
        assert secret.encode() not in path.read_bytes(), path
    engine = sqlalchemy.create_engine(site.server.db_url)
    try:
        tables = sqlalchemy.MetaData()
        tables.reflect(engine)
        with engine.connect() as conn:
            for table in tables.sorted_tables:
                for row in conn.execute(sqlalchemy.select(table)):
                    assert secret not in repr(tuple(row)), table.name
            stored = conn.execute(
                sqlalchemy.text("SELECT secret_sha256 FROM tokens WHERE key = :key"),
                {"key": key},
            ).scalar_one()
    finally:
        engine.dispose()
    assert stored == hashlib.sha256(secret.encode()).hexdigest()


def test_more_tokens_last_use_and_revocation(site: Site) -> None:
    server, alice = site.server, site["alice"]
    second, third = (token_of(d) for d in opus_all(server, *[["user", "token", "alice"]] * 2))
    assert len({alice.token, second, third}) == 3
    (key2, secret2), (key3, secret3) = token_parts(second), token_parts(third)
    for _ in range(4):  # both web workers cache it
        assert requests.get(alice.rest("hello"), headers=bearer(second), timeout=10).ok
        assert requests.get(alice.rest("hello"), auth=("alice", second), timeout=10).ok

    listing, *refused = opus_all(
        server,
        ["user", "list"],
        ["user", "add", "anonymous"],
        ["user", "add", "Anonymous"],
        ["user", "add", "admin-cli"],
        ["user", "add", "not a name"],
    )
    assert listing.returncode == 0, listing.stderr
    (line,) = [r for r in listing.stdout.splitlines() if r.startswith("alice\t")]
    assert "ztf" in line.split("\t")[2]
    used = re.search(rf"opus_{key2} ([^\s,]+) ([^\s,]+)", line)
    unused = re.search(rf"opus_{key3} ([^\s,]+) ([^\s,]+)", line)
    assert used and unused, line
    assert used.group(2) != "never"
    assert datetime.fromisoformat(used.group(2).replace("Z", "+00:00")) <= datetime.now(UTC)
    assert unused.group(2) == "never"
    assert secret2 not in listing.stdout and secret3 not in listing.stdout  # keys only
    for done in refused:
        assert done.returncode != 0, done.args
        assert "Traceback" not in done.stderr
    assert all("reserved" in d.stderr for d in refused[:3]), [d.stderr for d in refused]
    assert "user name" in refused[3].stderr

    revoked = opus(server, "user", "revoke", "alice", f"opus_{key2}")
    assert revoked.returncode == 0, revoked.stderr
    assert "1 token(s) of alice revoked" in revoked.stdout
    since = time.monotonic()
    while requests.get(alice.rest("hello"), headers=bearer(second), timeout=10).ok:
        # within the cache time (and the second the command took to start)
        assert time.monotonic() - since < CACHE_SECONDS + 2, "the revoked token still works"
        time.sleep(0.2)
    time.sleep(max(0.0, CACHE_SECONDS + 0.3 - (time.monotonic() - since)))
    for _ in range(4):  # fresh connections: every worker refuses it now
        gone = requests.get(alice.rest("hello"), headers=bearer(second), timeout=10)
        assert_status(gone, 401)
        assert_status(requests.get(alice.rest("hello"), auth=("alice", second), timeout=10), 401)
        assert requests.get(alice.rest("hello"), auth=("alice", third), timeout=10).ok
        assert requests.get(alice.rest("hello"), headers=bearer(alice.token), timeout=10).ok


# -- 2. credentials -------------------------------------------------------------------------


def test_no_credentials_is_401_with_both_challenges(site: Site) -> None:
    url = site.url
    for response in (
        requests.get(f"{url}/rest/hello", timeout=10),
        requests.get(f"{url}/rest/hello/{NO_SUCH_ID}", timeout=10),
        requests.post(f"{url}/rest/hello", data={"name": "x"}, timeout=10),
        requests.get(f"{url}/provsap", params={"ID": NO_SUCH_ID}, timeout=10),
        requests.get(f"{url}/jdl", timeout=10),
        requests.get(f"{url}/store/{NO_SUCH_ID}", timeout=10),
    ):
        assert_status(response, 401, "credentials")
        found = challenges(response)
        assert any(re.match(r'Basic realm="[^"]+"', c) for c in found), found
        assert any(re.match(r'Bearer realm="[^"]+"', c) for c in found), found


def security_methods(content: bytes) -> dict[str, list[str | None]]:
    """accessURL -> the standardIDs of its interface's securityMethods (None: anonymous)."""
    doc = etree.fromstring(content)
    return {
        str(i.findtext("accessURL")): [m.get("standardID") for m in i.iter("securityMethod")]
        for i in doc.iter("interface")
    }


def test_vosi_answers_anyone_and_lists_the_security_methods(
    site: Site, anonymous_site: tuple[Server, Client]
) -> None:
    url = site.url
    availability = requests.get(f"{url}/availability", timeout=10)
    assert availability.status_code == 200 and b"<vosi:available>true" in availability.content
    response = requests.get(f"{url}/capabilities", timeout=10)
    assert response.status_code == 200
    assert_valid(test_uws_api.capabilities_schema(), response.content)
    methods = security_methods(response.content)
    assert methods[f"{url}/capabilities"] == [] and methods[f"{url}/availability"] == []
    for secured in (f"{url}/provsap", f"{url}/rest/hello", f"{url}/rest/opus_echo"):
        assert sorted(methods[secured]) == [BASIC_AA, TOKEN], methods  # type: ignore[type-var]

    open_server, _ = anonymous_site
    response = requests.get(f"{open_server.url}/capabilities", timeout=10)
    assert_valid(test_uws_api.capabilities_schema(), response.content)
    methods = security_methods(response.content)
    for secured in (f"{open_server.url}/provsap", f"{open_server.url}/rest/hello"):
        assert None in methods[secured], methods
        assert {BASIC_AA, TOKEN} <= set(methods[secured]), methods


def test_basic_and_bearer_and_every_wrong_credential(site: Site) -> None:
    alice, bob = site["alice"], site["bob"]
    url = alice.rest("hello")
    assert requests.get(url, headers=basic("alice", alice.token), timeout=10).status_code == 200
    assert requests.get(url, headers=bearer(alice.token), timeout=10).status_code == 200
    assert requests.get(url, headers=basic("bob", bob.token), timeout=10).status_code == 200
    key, _ = token_parts(alice.token)
    for headers in (
        bearer(f"opus_{key}.{secrets.token_urlsafe(32)}"),  # the right key, a wrong secret
        basic("alice", f"opus_{key}.{secrets.token_urlsafe(32)}"),
        bearer(f"opus_{secrets.token_hex(6)}.{secrets.token_urlsafe(32)}"),  # no such key
        bearer("not-an-opus-token"),
        basic("alice", bob.token),  # a token of another user (bob's is cached: used above)
        basic("bob", alice.token),
        basic("nobody", alice.token),
        {"Authorization": "Basic !!!not*base64!!!"},
        {"Authorization": "Basic " + base64.b64encode(b"no colon here").decode()},
        {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe:x").decode()},
        {"Authorization": "Digest username=alice"},
        {"Authorization": "Bearer"},
    ):
        response = requests.get(url, headers=headers, timeout=10)
        assert_status(response, 401)
        assert len(challenges(response)) == 2, headers


# -- 3. clients: pyvo and requests ----------------------------------------------------------


def test_pyvo_auth_session_reads_the_users_jobs(site: Site) -> None:
    alice, bob = site["alice"], site["bob"]
    mine = alice.create("hello", name="Pyvo", RUNID="pyvo-auth")
    theirs = bob.create("hello", name="NotAlice")
    alice.completed(mine)
    bob.completed(theirs)

    capabilities = parse_capabilities(
        io.BytesIO(requests.get(f"{site.url}/capabilities", timeout=10).content)
    )
    session = AuthSession()
    session.credentials.set_password("alice", alice.token)
    session.update_from_capabilities(capabilities)

    listed = session.get(alice.rest("hello"))
    assert listed.status_code == 200, listed.text
    jobs = {j.jobid: j for j in parse_job_list(io.BytesIO(listed.content))}
    assert job_id(mine) in jobs and job_id(theirs) not in jobs
    assert {j.ownerid for j in jobs.values()} == {"alice"}
    fetched = session.get(mine)  # a URL below the capability's: the same credentials
    assert fetched.status_code == 200, fetched.text
    job = parse_job(io.BytesIO(fetched.content))
    assert (job.jobid, job.ownerid, job.runid, job.phase) == (
        job_id(mine),
        "alice",
        "pyvo-auth",
        "COMPLETED",
    )
    (result,) = job.results
    assert session.get(result.href).content == b"Hello, Pyvo!\n"
    assert session.get(theirs).status_code == 404
    provenance = session.get(f"{site.url}/provsap", params={"ID": job_id(mine)})
    assert provenance.status_code == 200, provenance.text

    plain = requests.get(alice.rest("hello"), auth=("alice", alice.token), timeout=10)
    assert plain.status_code == 200
    assert {j.jobid for j in parse_job_list(io.BytesIO(plain.content))} == set(jobs)


# -- 4. one visibility rule on every door ---------------------------------------------------


@dataclass(frozen=True)
class EchoJobs:
    """opus_echo jobs (no other test of this module uses that definition)."""

    bob: str  # bob's, COMPLETED, made first
    private: str  # alice's, COMPLETED, shared with none
    shared: str  # alice's, COMPLETED, SHARE=ztf at creation
    later: str  # alice's, PENDING, shared with ztf once made
    mark: str  # a time between bob's job and alice's


@pytest.fixture(scope="module")
def echo(site: Site) -> EchoJobs:
    alice, bob, carol = site["alice"], site["bob"], site["carol"]
    bob_job = bob.create("opus_echo", text="bob's")
    bob.completed(bob_job)
    time.sleep(0.05)
    mark = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    time.sleep(0.05)
    private = alice.create("opus_echo", text="alice-private")
    shared = alice.create("opus_echo", text="alice-shared", SHARE="ztf")
    later = alice.create("opus_echo", run=False, text="alice-later")
    assert carol.get(later).status_code == 404  # not shared yet
    assert alice.post(later, {"SHARE": "ztf"}).status_code == 303  # shared while PENDING
    assert carol.get(later).status_code == 200
    alice.completed(private)
    alice.completed(shared)
    return EchoJobs(bob_job, private, shared, later, mark)


def test_job_lists_show_only_visible_jobs_with_every_filter(site: Site, echo: EchoJobs) -> None:
    phases = {echo.bob: "COMPLETED", echo.private: "COMPLETED", echo.shared: "COMPLETED"}
    phases[echo.later] = "PENDING"
    order = [echo.bob, echo.private, echo.shared, echo.later]  # oldest first
    sees = {
        "bob": {echo.bob},
        "alice": {echo.private, echo.shared, echo.later},
        "carol": {echo.shared, echo.later},
        "root": set(order),
        "lim": set(),
    }
    filters: list[list[tuple[str, str]]] = [
        [],
        [("PHASE", "COMPLETED")],
        [("PHASE", "PENDING")],
        [("PHASE", "COMPLETED"), ("PHASE", "PENDING")],
        [("AFTER", echo.mark)],
        [("AFTER", "2999-01-01T00:00:00Z")],
        [("LAST", "1")],
        [("LAST", "2")],
        [("PHASE", "COMPLETED"), ("AFTER", echo.mark)],
        [("PHASE", "COMPLETED"), ("LAST", "1")],
        [("PHASE", "COMPLETED"), ("AFTER", echo.mark), ("LAST", "1")],
    ]
    for name, visible in sees.items():
        for params in filters:
            wanted = {v for k, v in params if k == "PHASE"}
            expected = [
                u
                for u in order
                if u in visible
                and (not wanted or phases[u] in wanted)
                and not (("AFTER", echo.mark) in params and u == echo.bob)
                and ("AFTER", "2999-01-01T00:00:00Z") not in params
            ]
            last = [int(v) for k, v in params if k == "LAST"]
            if last:
                expected = expected[::-1][: last[0]]  # the newest, newest first
            listed = site[name].listed("opus_echo", params)
            assert listed == [job_id(u) for u in expected], (name, params, listed)


SUB_RESOURCES = (
    "",
    "?WAIT=1",
    "/phase",
    "/quote",
    "/executionduration",
    "/destruction",
    "/error",
    "/owner",
    "/parameters",
    "/parameters/text",
    "/results",
    "/results/output",
    *(f"/provenance?RESPONSEFORMAT={f}" for f in PROV_FORMATS),
)


def test_a_hidden_job_is_404_on_every_sub_resource_as_a_missing_one(
    site: Site, echo: EchoJobs
) -> None:
    alice, bob, carol = site["alice"], site["bob"], site["carol"]
    hidden_id = job_id(echo.private)
    missing = f"{alice.rest('opus_echo')}/{NO_SUCH_ID}"
    for sub in SUB_RESOURCES:
        assert alice.session.get(echo.private + sub).status_code == 200, sub
        assert site["root"].session.get(echo.private + sub).status_code == 200, sub
        for other in (bob, carol):
            refused = other.session.get(echo.private + sub)
            assert_status(refused, 404)
            absent = other.session.get(missing + sub)
            assert_status(absent, 404)
            assert same_but_ids(refused.text, absent.text, hidden_id, NO_SUCH_ID), (sub, refused)
            assert "alice" not in refused.text

    for method, sub, data in (
        ("POST", "/phase", {"PHASE": "ABORT"}),
        ("POST", "", {"PHASE": "RUN"}),
        ("POST", "", {"ACTION": "DELETE"}),
        ("DELETE", "", None),
        ("POST", "/parameters", {"text": "bob was here"}),
        ("PUT", "/parameters/text", "bob was here"),
        ("POST", "/executionduration", {"EXECUTIONDURATION": "5"}),
        ("POST", "/destruction", {"DESTRUCTION": "2999-01-01T00:00:00Z"}),
    ):
        refused = bob.session.request(method, echo.private + sub, data=data)
        absent = bob.session.request(method, missing + sub, data=data)
        assert_status(refused, 404)
        assert_status(absent, 404)
        assert same_but_ids(refused.text, absent.text, hidden_id, NO_SUCH_ID), (method, sub)
    assert alice.get(f"{echo.private}/phase").text == "COMPLETED"
    assert alice.get(f"{echo.private}/parameters/text").text == "alice-private"


def test_a_shared_job_is_seen_by_the_group_but_changed_by_its_owner_only(
    site: Site, echo: EchoJobs
) -> None:
    alice, carol = site["alice"], site["carol"]
    for sub in SUB_RESOURCES:
        assert carol.session.get(echo.shared + sub).status_code == 200, sub
    for sub in ("", "/phase", "/owner", "/parameters", "/parameters/text", "/results"):
        assert carol.session.get(echo.later + sub).status_code == 200, sub
    assert carol.get(f"{echo.shared}/owner").text == "alice"
    for method, sub, data in (
        ("POST", "/phase", {"PHASE": "RUN"}),
        ("POST", "", {"PHASE": "RUN"}),
        ("POST", "/phase", {"PHASE": "ABORT"}),
        ("POST", "", {"ACTION": "DELETE"}),
        ("DELETE", "", None),
        ("POST", "", {"text": "carol was here"}),
        ("POST", "/parameters", {"text": "carol was here"}),
        ("PUT", "/parameters/text", "carol was here"),
        ("POST", "", {"SHARE": ""}),
        ("POST", "/executionduration", {"EXECUTIONDURATION": "5"}),
        ("POST", "/destruction", {"DESTRUCTION": "2999-01-01T00:00:00Z"}),
    ):
        response = carol.session.request(method, echo.later + sub, data=data)
        assert_status(response, 403, "alice")
    assert_status(carol.session.delete(echo.shared), 403)
    assert alice.get(f"{echo.later}/phase").text == "PENDING"
    assert alice.get(f"{echo.later}/parameters/text").text == "alice-later"
    assert carol.get(echo.later).status_code == 200  # still shared
    assert alice.get(f"{echo.shared}/phase").text == "COMPLETED"


def test_an_admin_sees_and_changes_everything(site: Site) -> None:
    alice, bob, root = site["alice"], site["bob"], site["root"]
    pending = alice.create("hello", run=False, name="ForAdmin")
    bobs = bob.create("hello", name="Bob")
    assert root.get(pending).status_code == 200
    assert root.post(pending, {"name": "ChangedByRoot"}).status_code == 303
    assert root.post(f"{pending}/executionduration", {"EXECUTIONDURATION": "9"}).status_code == 303
    assert root.post(pending, {"SHARE": "short"}).status_code == 303  # any group
    assert root.post(f"{pending}/phase", {"PHASE": "RUN"}).status_code == 303
    alice.completed(pending)
    assert alice.get(f"{pending}/results/greeting").content == b"Hello, ChangedByRoot!\n"
    assert alice.get(f"{pending}/owner").text == "alice"  # run by root, still alice's
    assert site["dora"].get(pending).status_code == 200  # dora is in short
    bob.completed(bobs)
    assert root.session.delete(bobs, allow_redirects=False).status_code == 303
    assert bob.get(bobs).status_code == 404


def test_store_and_inputs_follow_the_rule(site: Site, echo: EchoJobs) -> None:
    alice, bob, carol, root = site["alice"], site["bob"], site["carol"], site["root"]
    private, shared = alice.result_entity(echo.private), alice.result_entity(echo.shared)
    store = f"{site.url}/store"
    for who, entity, status in (
        (alice, private, 200),
        (alice, shared, 200),
        (carol, shared, 200),
        (carol, private, 404),
        (root, private, 200),
        (root, shared, 200),
        (bob, private, 404),
        (bob, shared, 404),
    ):
        assert who.get(f"{store}/{entity}").status_code == status, (who.name, entity)
    assert alice.get(f"{store}/{private}").content == b"alice-private\n"
    refused, absent = bob.get(f"{store}/{private}"), bob.get(f"{store}/{NO_SUCH_ID}")
    assert_status(refused, 404)
    assert same_but_ids(refused.text, absent.text, private, NO_SUCH_ID)

    rest = bob.rest("opus_append")
    ids = (private, job_id(echo.private), NO_SUCH_ID)
    for hidden in (
        private,
        f"opus:ent_{private}",
        f"{store}/{private}",
        f"{echo.private}/results/output",  # her result's URL
    ):
        nothing = hidden.replace(private, NO_SUCH_ID).replace(job_id(echo.private), NO_SUCH_ID)
        refused = bob.post(rest, {"input": hidden, "PHASE": "RUN"})
        absent = bob.post(rest, {"input": nothing, "PHASE": "RUN"})
        assert_status(refused, 400, "parameter input")
        assert_status(absent, 400, "parameter input")
        assert same_but_ids(refused.text, absent.text, *ids), (refused.text, absent.text)
    assert bob.listed("opus_append") == []  # nothing was made of those
    # carol may use what is shared with her, not the rest
    used = carol.create("opus_append", input=shared, text="carol's")
    assert carol.completed(used) is not None
    assert carol.get(f"{used}/results/output").content == b"alice-shared\ncarol's\n"
    assert_status(carol.post(carol.rest("opus_append"), {"input": private}), 400, "input")


def test_share_only_with_ones_own_groups(site: Site) -> None:
    alice, bob = site["alice"], site["bob"]
    for who, groups, words in (
        (bob, "ztf", "not a member"),
        (alice, "short", "not a member"),
        (alice, "ztf,short", "not a member"),
        (alice, "nosuchgroup", "no group"),
    ):
        response = who.post(who.rest("hello"), {"name": "x", "SHARE": groups})
        assert_status(response, 400, "parameter SHARE", words)
    pending = alice.create("hello", run=False, name="x")
    assert_status(alice.post(pending, {"SHARE": "short"}), 400, "parameter SHARE")
    assert alice.post(pending, {"SHARE": "ztf"}).status_code == 303
    assert site["carol"].get(pending).status_code == 200
    assert alice.post(pending, {"SHARE": ""}).status_code == 303  # shared with none again
    assert site["carol"].get(pending).status_code == 404


# -- 5. ProvSAP: a lineage stops at what the reader may not see -----------------------------


@dataclass(frozen=True)
class Lineage:
    first: str  # alice's private hello job
    second: str  # alice's opus_append of the first's result, shared with ztf
    output: str  # the second's result entity (bare id)


@pytest.fixture(scope="module")
def lineage(site: Site) -> Lineage:
    alice = site["alice"]
    first = alice.create("hello", name="Zelda-private", RUNID="zelda-run")
    alice.completed(first)
    second = alice.create(
        "opus_append", input=alice.result_entity(first), text="public", SHARE="ztf"
    )
    alice.completed(second)
    return Lineage(first, second, alice.result_entity(second))


def provsap(who: Client, **params: str) -> requests.Response:
    return who.get(f"{who.base}/provsap", **params)


def test_provsap_walk_stops_at_a_hidden_job(site: Site, lineage: Lineage) -> None:
    carol = site["carol"]
    first, second = job_id(lineage.first), job_id(lineage.second)
    texts = {}
    for response_format in PROV_FORMATS:
        response = provsap(
            carol, ID=f"opus:ent_{lineage.output}", DEPTH="ALL", RESPONSEFORMAT=response_format
        )
        assert response.status_code == 200, response.text
        texts[response_format] = response.text
        assert f"job_{second}" in response.text
        for secret in (first, "Zelda-private", "zelda-run", "jobdef_hello", "hello ("):
            assert secret not in response.text, (response_format, secret)

    doc = json.loads(texts["PROV-JSON"])
    jsonschema.validate(doc, json.loads((SCHEMAS / "prov-json.schema.json").read_text()))
    stand_ins = {
        k: v
        for k, v in doc["activity"].items()
        if v.get("prov:type", {}).get("$") == "voprov:hidden"
    }
    assert len(stand_ins) == 1, doc["activity"]
    (stand_in,) = stand_ins
    assert set(doc["activity"]) == {f"opus:job_{second}", stand_in}
    alice_first_output = site["alice"].result_entity(lineage.first)
    assert {(g["prov:entity"], g["prov:activity"]) for g in doc["wasGeneratedBy"].values()} >= {
        (f"opus:ent_{alice_first_output}", stand_in)
    }
    assert {f"opus:ent_{lineage.output}", f"opus:ent_{alice_first_output}"} <= set(doc["entity"])

    votable = etree.fromstring(texts["PROV-VOTABLE"].encode())
    infos = {i.get("name"): i.get("value") for i in votable.iter(f"{VOTABLE}INFO")}
    assert infos.get("hidden") == "1", infos
    xsd = etree.XMLSchema(etree.parse(str(SCHEMAS / "prov.xsd")))
    xml_doc = etree.fromstring(texts["PROV-XML"].encode())
    assert xsd.validate(xml_doc), xsd.error_log
    assert "voprov:hidden" in texts["PROV-XML"]
    parsed = prov.model.ProvDocument.deserialize(content=texts["PROV-N"], format="provn")
    assert len(list(parsed.get_records(prov.model.ProvActivity))) == 2

    # what carol may not see at all is unknown, as what does not exist
    for hidden in (first, f"opus:job_{first}"):
        refused = provsap(carol, ID=hidden)
        absent = provsap(carol, ID=hidden.replace(first, NO_SUCH_ID))
        assert_status(refused, 404)
        assert same_but_ids(refused.text, absent.text, first, NO_SUCH_ID)


def test_provsap_for_strangers_and_admins(site: Site, lineage: Lineage) -> None:
    bob, root = site["bob"], site["root"]
    first, second = job_id(lineage.first), job_id(lineage.second)
    for value in (lineage.output, f"opus:ent_{lineage.output}", second):
        refused = provsap(bob, ID=value)
        absent = provsap(
            bob, ID=value.replace(lineage.output, NO_SUCH_ID).replace(second, NO_SUCH_ID)
        )
        assert_status(refused, 404)
        assert same_but_ids(refused.text, absent.text, lineage.output, second, NO_SUCH_ID)
    whole = provsap(root, ID=lineage.output, DEPTH="ALL")
    assert whole.status_code == 200, whole.text
    assert {f"opus:job_{first}", f"opus:job_{second}"} <= set(whole.json()["activity"])
    assert "voprov:hidden" not in whole.text and "Zelda-private" in whole.text
    votable = provsap(root, ID=lineage.output, DEPTH="ALL", RESPONSEFORMAT="PROV-VOTABLE")
    assert 'name="hidden"' not in votable.text
    # the owner sees her own lineage whole, too
    assert "voprov:hidden" not in provsap(site["alice"], ID=lineage.output, DEPTH="ALL").text


# -- 6. definitions for groups, data rights -------------------------------------------------


def test_a_definition_for_a_group(site: Site) -> None:
    alice, bob, root = site["alice"], site["bob"], site["root"]
    names = {}
    for who in (alice, bob, root):
        names[who.name] = [d["name"] for d in who.get(f"{site.url}/jdl").json()["jobdefs"]]
    assert "partners" not in names["bob"] and "hello" in names["bob"]
    assert "partners" in names["alice"] and "partners" in names["root"]
    for response in (
        bob.get(f"{site.url}/jdl/partners"),
        bob.get(f"{site.url}/jdl/partners/json"),
        bob.get(bob.rest("partners")),
        bob.post(bob.rest("partners"), {"PHASE": "RUN"}),
        bob.get(f"{bob.rest('partners')}/{NO_SUCH_ID}"),
    ):
        assert_status(response, 403, "ztf")
    assert alice.get(f"{site.url}/jdl/partners").status_code == 200

    partners = alice.create("partners")
    mine = alice.create("pyrights", label="mine")
    theirs = bob.create("rights")
    alice.completed(partners)
    alice.completed(mine)
    bob.completed(theirs)
    assert alice.get(f"{partners}/results/rights").text == "rights=ztf_partnership\n"
    context = context_of(alice.get(f"{partners}/provenance").json())
    assert context["voprov:context_data_rights"] == "ztf_partnership"
    assert json.loads(alice.get(f"{mine}/results/granted").text) == {
        "label": "mine",
        "data_rights": ["ztf_partnership"],
    }
    assert bob.get(f"{theirs}/results/rights").text == "rights=\n"
    context = context_of(bob.get(f"{theirs}/provenance").json())
    assert context["voprov:context_data_rights"] == "none"


def test_a_definition_shares_its_jobs_by_default(site: Site) -> None:
    alice, bob, carol = site["alice"], site["bob"], site["carol"]
    shared = alice.create("pyrights", run=False)  # pyrights: share=ztf
    private = alice.create("pyrights", run=False, SHARE="")  # explicitly with none
    plain = alice.create("hello", run=False, name="x")  # hello: no share
    assert carol.get(shared).status_code == 200
    assert carol.get(private).status_code == 404
    assert carol.get(plain).status_code == 404
    assert bob.get(shared).status_code == 404
    listed = carol.listed("pyrights")
    assert job_id(shared) in listed and job_id(private) not in listed
    assert job_id(shared) not in bob.listed("pyrights")


# -- 7. limits ------------------------------------------------------------------------------


def test_active_jobs_limit_is_429_until_one_ends(site: Site) -> None:
    lim = site["lim"]
    first = lim.create("sleeper", seconds="60", EXECUTIONDURATION="60")
    refused = lim.post(lim.rest("sleeper"), {"seconds": "60", "PHASE": "RUN"})
    assert_status(refused, 429, "lim has 1 jobs queued or executing")
    second = lim.create("sleeper", run=False, seconds="60", EXECUTIONDURATION="60")
    assert_status(lim.post(f"{second}/phase", {"PHASE": "RUN"}), 429, "queued or executing")
    assert_status(lim.post(second, {"PHASE": "RUN"}), 429)
    assert lim.get(f"{second}/phase").text == "PENDING"
    # the limit is lim's: others run on
    other = site["alice"].create("sleeper", seconds="0")
    assert lim.post(f"{first}/phase", {"PHASE": "ABORT"}).status_code == 303
    assert lim.get(f"{first}/phase").text == "ABORTED"
    assert lim.post(f"{second}/phase", {"PHASE": "RUN"}).status_code == 303
    assert lim.get(f"{second}/phase").text in ("QUEUED", "EXECUTING")
    assert lim.post(f"{second}/phase", {"PHASE": "ABORT"}).status_code == 303
    site["alice"].completed(other)


def test_duration_limits_of_users_and_groups(site: Site) -> None:
    for name, expected in (("brief", "5"), ("dora", "7"), ("alice", "100")):
        who = site[name]
        job = who.create("hello", run=False, name="x", EXECUTIONDURATION="100")
        assert who.get(f"{job}/executionduration").text == expected, name
        assert who.post(f"{job}/executionduration", {"EXECUTIONDURATION": "100"}).ok
        assert who.get(f"{job}/executionduration").text == expected, name


# -- 8. anonymous mode on -------------------------------------------------------------------


def test_anonymous_mode(anonymous_site: tuple[Server, Client]) -> None:
    server, erin = anonymous_site
    anonymous = server.create("hello", name="Anonymous")
    mine = erin.create("hello", name="Erin")
    erin.completed(mine)
    server.wait_final(anonymous)
    assert erin.get(anonymous).status_code == 200
    assert job_id(anonymous) in erin.listed("hello")
    assert job_id(mine) in erin.listed("hello")
    assert_status(server.session.get(mine), 404)
    assert_status(server.session.get(f"{mine}/results/greeting"), 404)
    listed = server.session.get(server.rest("hello"), params={"LAST": "1000"})
    assert job_id(mine) not in listed.text and job_id(anonymous) in listed.text
    assert_status(
        server.session.post(server.rest("hello"), data={"name": "x", "SHARE": "ztf"}),
        400,
        "parameter SHARE",
    )
    # wrong credentials are refused, not served as anonymous
    assert_status(server.session.get(server.rest("hello"), headers=bearer(erin.token + "x")), 401)


# -- 9. the command line client -------------------------------------------------------------


def test_opus_submit_and_jobs_send_credentials(site: Site) -> None:
    alice, url = site["alice"], site.url
    by_option = opus(
        site.server, "submit", "hello", "name=Cli", "--server", url, "--token", alice.token,
        env=client_env(),
    )  # fmt: skip
    assert by_option.returncode == 0, by_option.stderr
    first = by_option.stdout.strip()
    assert alice.get(f"{first}/owner").text == "alice"
    by_env = opus(
        site.server, "submit", "hello", "name=Env", "--wait", "--server", url,
        env=client_env(OPUS_TOKEN=alice.token),
    )  # fmt: skip
    assert by_env.returncode == 0, by_env.stderr
    assert "COMPLETED" in by_env.stdout.splitlines()
    second = by_env.stdout.splitlines()[0]
    basic_user = opus(
        site.server, "jobs", "hello", "--server", url, "--user", "alice", "--token", alice.token,
        env=client_env(),
    )  # fmt: skip
    assert basic_user.returncode == 0, basic_user.stderr
    ids = [line.split("\t")[1] for line in basic_user.stdout.splitlines()]
    assert job_id(first) in ids and job_id(second) in ids
    every = opus(site.server, "jobs", "--server", url, env=client_env(OPUS_TOKEN=alice.token))
    assert every.returncode == 0, every.stderr
    assert f"hello\t{job_id(second)}\t" in every.stdout
    bobs = opus(
        site.server, "jobs", "hello", "--server", url, "--token", site["bob"].token,
        env=client_env(),
    )  # fmt: skip
    assert bobs.returncode == 0 and job_id(first) not in bobs.stdout

    for args in (
        ["submit", "hello", "name=x", "--server", url],
        ["jobs", "hello", "--server", url],
        ["jobs", "--server", url],
        ["jobs", "hello", "--server", url, "--user", "bob", "--token", alice.token],
    ):
        refused = opus(site.server, *args, env=client_env())
        assert refused.returncode != 0, args
        assert "401" in refused.stderr, (args, refused.stderr)
        assert "Traceback" not in refused.stderr, refused.stderr


# -- 10. provenance export for a user -------------------------------------------------------


def exported(site: Site, out: Path, *args: str) -> tuple[set[str], str]:
    """The ids `opus prov export` wrote, and all its files' text."""
    done = opus(site.server, "prov", "export", "--out", str(out), *args)
    assert done.returncode == 0, done.stderr
    with (out / "index.csv").open() as handle:
        ids = {row["id"] for row in csv.DictReader(handle)}
    return ids, "".join(p.read_text() for p in sorted(out.iterdir()))


def test_prov_export_for_a_user(
    site: Site, echo: EchoJobs, lineage: Lineage, tmp_path: Path
) -> None:
    hers = [job_id(u) for u in (echo.private, echo.shared, lineage.first, lineage.second)]
    ids, text = exported(site, tmp_path / "bob", "--user", "bob")
    assert f"opus:job_{job_id(echo.bob)}" in ids
    for job in hers:
        assert job not in text, job
    assert "alice-private" not in text and "Zelda-private" not in text
    assert "opus:user_alice" not in text

    ids, text = exported(site, tmp_path / "carol", "--user", "carol")
    assert f"opus:job_{job_id(echo.shared)}" in ids
    assert job_id(echo.private) not in text and job_id(lineage.first) not in text

    ids, text = exported(site, tmp_path / "all")
    assert {f"opus:job_{j}" for j in [*hers, job_id(echo.bob)]} <= ids
    assert "Zelda-private" in text

    unknown = opus(site.server, "prov", "export", "--out", str(tmp_path / "x"), "--user", "zed")
    assert unknown.returncode == 2 and "zed" in unknown.stderr

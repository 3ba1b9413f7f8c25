"""Identities in process: the WSGI app with anonymous access off, driven by webtest.

Without an executor a job given PHASE=RUN stays QUEUED, which is what the active-jobs
limit counts. The end-to-end tier (test_identities.py) runs the same rules against a real
server, its CLI and pyvo.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
import webtest

from opus.accounts import Accounts
from opus.app import create_app
from opus.config import Settings
from opus.store.db import Database
from opus.store.migrate import ensure_current

ROOT = Path(__file__).resolve().parent.parent
NO_SUCH_ID = "0123456789abcdef"
SUB_RESOURCES = [
    "",
    "/phase",
    "/quote",
    "/executionduration",
    "/destruction",
    "/error",
    "/owner",
    "/parameters",
    "/parameters/name",
    "/results",
    "/provenance",
]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        data_dir=tmp_path_factory.mktemp("opus-auth"),
        database_url="",
        broker_url="",
        allow_anonymous=False,
        jobdef_path=str(ROOT / "tests" / "jobdefs"),
        max_execution_duration=100,
        max_active_jobs=50,
    )


@pytest.fixture(scope="module")
def tokens(settings: Settings) -> Iterator[dict[str, str]]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.db_url)
    ensure_current(db)
    accounts = Accounts(db)
    accounts.add_group("ztf", ["ztf_partnership"])
    accounts.add_group("hess", [])
    found = {
        "alice": accounts.add_user("alice", ["ztf"]),
        "bob": accounts.add_user("bob", []),
        "carol": accounts.add_user("carol", ["ztf"]),
        "root": accounts.add_user("root", [], admin=True),
        "busy": accounts.add_user("busy", []),
        "brief": accounts.add_user("brief", ["hess"]),
    }
    accounts.set_user("busy", max_active_jobs=2)
    accounts.set_group("hess", max_execution_duration=7)
    yield found
    db.engine.dispose()


@pytest.fixture(scope="module")
def app(settings: Settings, tokens: dict[str, str]) -> webtest.TestApp:
    return webtest.TestApp(create_app(settings))


def basic(user: str, token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def create(app: webtest.TestApp, who: dict[str, str], jobdef: str = "hello", **params: str) -> str:
    response = app.post(f"/rest/{jobdef}", {"name": "x", **params}, headers=who, status=303)
    return str(response.headers["Location"]).removeprefix("http://localhost:80")


def test_no_credentials_401_with_both_challenges(app: webtest.TestApp) -> None:
    for path in ["/rest/hello", "/jdl", f"/rest/hello/{NO_SUCH_ID}", "/provsap?ID=x", "/store/x"]:
        response = app.get(path, status=401)
        challenges = response.headers.getall("WWW-Authenticate")
        assert any(c.startswith("Basic ") for c in challenges), challenges
        assert any(c.startswith("Bearer ") for c in challenges), challenges
    app.post("/rest/hello", {"name": "x"}, status=401)


def test_vosi_answers_anyone_and_lists_no_anonymous_method(app: webtest.TestApp) -> None:
    app.get("/availability", status=200)
    caps = app.get("/capabilities", status=200).text
    assert "ivo://ivoa.net/sso#BasicAA" in caps and "ivo://ivoa.net/sso#token" in caps
    assert "<securityMethod/>" not in caps
    assert "/rest/partners" not in caps  # restricted to ztf: not for an anonymous reader


def test_wrong_credentials_are_refused(app: webtest.TestApp, tokens: dict[str, str]) -> None:
    app.get("/rest/hello", headers=basic("bob", tokens["alice"]), status=401)
    app.get("/rest/hello", headers=bearer(tokens["alice"] + "x"), status=401)
    app.get("/rest/hello", headers={"Authorization": "Basic %%%"}, status=401)
    app.get("/rest/hello", headers=basic("alice", tokens["alice"]), status=200)
    app.get("/rest/hello", headers=bearer(tokens["alice"]), status=200)


def test_hidden_job_answers_as_a_missing_one(app: webtest.TestApp, tokens: dict[str, str]) -> None:
    alice, bob = bearer(tokens["alice"]), bearer(tokens["bob"])
    job = create(app, alice)
    missing = job.rsplit("/", 1)[0] + f"/{NO_SUCH_ID}"
    for sub in SUB_RESOURCES:
        hidden = app.get(job + sub, headers=bob, expect_errors=True)
        absent = app.get(missing + sub, headers=bob, expect_errors=True)
        assert hidden.status_int == absent.status_int == 404, (sub, hidden.text)
        assert hidden.text.replace(job.rsplit("/", 1)[1], NO_SUCH_ID) == absent.text
    for sub in ("/phase", "/parameters", "/owner"):
        assert app.get(job + sub, headers=alice).status_int == 200
    assert app.get(job + "/owner", headers=alice).text == "alice"
    app.post(job, {"PHASE": "ABORT"}, headers=bob, status=404)
    app.delete(job, headers=bob, status=404)
    listed = app.get("/rest/hello", headers=bob).text
    assert job.rsplit("/", 1)[1] not in listed
    assert job.rsplit("/", 1)[1] in app.get("/rest/hello?LAST=5", headers=alice).text


def test_shared_job_seen_by_group_but_changed_by_owner_only(
    app: webtest.TestApp, tokens: dict[str, str]
) -> None:
    alice, carol = bearer(tokens["alice"]), bearer(tokens["carol"])
    root, bob = bearer(tokens["root"]), bearer(tokens["bob"])
    shared = create(app, alice, SHARE="ztf")
    later = create(app, alice)
    app.get(later, headers=carol, status=404)
    app.post(later, {"SHARE": "ztf"}, headers=alice, status=303)  # while PENDING
    for job in (shared, later):
        assert app.get(job + "/phase", headers=carol).text == "PENDING"
        app.post(job + "/phase", {"PHASE": "RUN"}, headers=carol, status=403)
        app.post(job, {"name": "y"}, headers=carol, status=403)
        app.delete(job, headers=carol, status=403)
        app.get(job, headers=bob, status=404)
    app.post(later, {"SHARE": ""}, headers=alice, status=303)  # shared with none again
    app.get(later, headers=carol, status=404)
    app.post(shared + "/phase", {"PHASE": "ABORT"}, headers=root, status=303)
    assert app.get(shared + "/phase", headers=alice).text == "ABORTED"
    app.delete(shared, headers=root, status=303)
    app.get(shared, headers=alice, status=404)


def test_share_only_with_ones_own_existing_groups(
    app: webtest.TestApp, tokens: dict[str, str]
) -> None:
    bob = bearer(tokens["bob"])
    for group, word in (("ztf", "member"), ("nosuch", "no group")):
        response = app.post("/rest/hello", {"SHARE": group}, headers=bob, expect_errors=True)
        assert response.status_int == 400 and "SHARE" in response.text and word in response.text
    create(app, bearer(tokens["root"]), SHARE="hess")  # an admin shares with any group


def test_restricted_definition(app: webtest.TestApp, tokens: dict[str, str]) -> None:
    alice, bob = bearer(tokens["alice"]), bearer(tokens["bob"])
    names = [d["name"] for d in app.get("/jdl", headers=bob).json["jobdefs"]]
    assert "partners" not in names and "hello" in names
    assert "partners" in [d["name"] for d in app.get("/jdl", headers=alice).json["jobdefs"]]
    for response in (
        app.get("/jdl/partners", headers=bob, expect_errors=True),
        app.get("/rest/partners", headers=bob, expect_errors=True),
        app.post("/rest/partners", {}, headers=bob, expect_errors=True),
    ):
        assert response.status_int == 403 and "ztf" in response.text
    app.get("/jdl/partners/json", headers=alice, status=200)
    app.post("/rest/partners", {}, headers=alice, status=303)


def test_active_jobs_limit(app: webtest.TestApp, tokens: dict[str, str]) -> None:
    busy = bearer(tokens["busy"])
    first = create(app, busy, PHASE="RUN")  # QUEUED: no executor here
    create(app, busy, PHASE="RUN")
    response = app.post("/rest/hello", {"PHASE": "RUN"}, headers=busy, expect_errors=True)
    assert response.status_int == 429 and "busy" in response.text, response.text
    pending = create(app, busy)  # PENDING jobs do not count
    app.post(pending + "/phase", {"PHASE": "RUN"}, headers=busy, status=429)
    app.post(first + "/phase", {"PHASE": "ABORT"}, headers=busy, status=303)
    app.post(pending + "/phase", {"PHASE": "RUN"}, headers=busy, status=303)


def test_group_limit_on_execution_duration(app: webtest.TestApp, tokens: dict[str, str]) -> None:
    brief, alice = bearer(tokens["brief"]), bearer(tokens["alice"])
    job = create(app, brief, EXECUTIONDURATION="60")
    assert app.get(job + "/executionduration", headers=brief).text == "7"
    job = create(app, alice, EXECUTIONDURATION="60")
    assert app.get(job + "/executionduration", headers=alice).text == "60"

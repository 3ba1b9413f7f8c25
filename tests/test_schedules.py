"""Periodic jobs on a real server in the default set-up (the embedded executor runs the
sweeps): `opus schedule` and the administrators' /schedules, a tick's job owned by the
schedule's owner and informed by the previous run, missed ticks run once, bad requests."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from lxml import etree

from opus.ids import namespace_uri
from opus.tap.examples import examples
from tests.servers import ROOT, Server
from tests.test_execution import wait_for
from tests.test_provenance import SCHEMAS
from tests.test_tap import rows

UWS = "{http://www.ivoa.net/xml/UWS/v1.0}"
VOTABLE = {"v": "http://www.ivoa.net/xml/VOTable/v1.3"}


def opus(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opus.cli", *args],
        env=dict(server.env),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def jobs_of(server: Server, schedule_id: str) -> list[dict[str, object]]:
    return server.rows(
        "SELECT id, owner, phase, informed_by FROM jobs WHERE schedule_id = :s"
        " ORDER BY creation_time",
        {"s": schedule_id},
    )


def test_a_schedule_runs_its_job_at_each_tick_as_its_owner(
    start_server: Callable[..., Server],
) -> None:
    server = start_server()
    added = opus(server, "user", "add", "ada")
    assert added.returncode == 0, added.stderr
    made = opus(server, "schedule", "add", "hello", "--every", "1s", "--owner", "ada", "name=tick")
    assert made.returncode == 0, made.stderr
    schedule = json.loads(made.stdout)
    assert schedule["every"] == 1.0 and schedule["owner"] == "ada"

    wait_for(lambda: len(jobs_of(server, schedule["id"])) >= 3, 20, "three ticks")
    removed = opus(server, "schedule", "remove", schedule["id"])
    assert removed.returncode == 0, removed.stderr
    runs = jobs_of(server, schedule["id"])
    assert {run["owner"] for run in runs} == {"ada"}
    # each run is informed by the one before it; the first by none
    assert [run["informed_by"] for run in runs] == [None] + [run["id"] for run in runs[:-1]]
    time.sleep(2)
    assert len(jobs_of(server, schedule["id"])) == len(runs), "a removed schedule still ticks"

    token = opus(server, "user", "token", "ada").stdout.strip().splitlines()[-1]
    server.session.headers["Authorization"] = f"Bearer {token}"
    url = f"{server.url}/rest/hello/{runs[0]['id']}"
    doc = server.wait_final(url)
    assert doc.findtext(f"{UWS}phase") == "COMPLETED"
    assert doc.findtext(f"{UWS}ownerId") == "ada"
    second_run_is_informed_by_the_first_in_its_provenance(server, schedule["id"], runs)


def second_run_is_informed_by_the_first_in_its_provenance(
    server: Server, schedule_id: str, runs: list[dict[str, object]]
) -> None:
    """The second run's provenance, in every format and in TAP: wasInformedBy the first
    run, and the schedule that made it."""
    first, second = (f"opus:job_{run['id']}" for run in runs[:2])
    url = f"{server.url}/rest/hello/{runs[1]['id']}"
    server.wait_final(url)

    def provenance(response_format: str) -> bytes:
        response = server.session.get(
            f"{url}/provenance", params={"RESPONSEFORMAT": response_format}
        )
        assert response.status_code == 200, response.text
        return response.content

    doc = json.loads(provenance("PROV-JSON"))
    told = {(c["prov:informed"], c["prov:informant"]) for c in doc["wasInformedBy"].values()}
    assert (second, first) in told
    assert doc["activity"][second]["opus:schedule"] == schedule_id
    assert "opus:schedule" in doc["activity"][first]  # the first run names it too

    provn = provenance("PROV-N").decode()
    assert f"wasInformedBy({second}, {first})" in provn
    assert f'opus:schedule="{schedule_id}"' in provn

    xml = etree.fromstring(provenance("PROV-XML"))
    xsd = etree.XMLSchema(etree.parse(str(SCHEMAS / "prov.xsd")))
    assert xsd.validate(xml), xsd.error_log
    prov = "{http://www.w3.org/ns/prov#}"
    pairs = {
        (e.find(f"{prov}informed").get(f"{prov}ref"), e.find(f"{prov}informant").get(f"{prov}ref"))
        for e in xml.iter(f"{prov}wasInformedBy")
    }
    assert (second, first) in pairs

    votable = etree.fromstring(provenance("PROV-VOTABLE"))
    [informed] = votable.iterfind(".//v:TABLE[@name='WasInformedBy']", VOTABLE)
    pairs = {(tr[0].text, tr[1].text) for tr in informed.iterfind(".//v:TR", VOTABLE)}
    assert (second, first) in pairs
    [activities] = votable.iterfind(".//v:TABLE[@name='Activity']", VOTABLE)
    names = [f.get("name") for f in activities.iterfind("v:FIELD", VOTABLE)]
    column = names.index("opus:schedule")
    made = {tr[0].text: tr[column].text for tr in activities.iterfind(".//v:TR", VOTABLE)}
    assert made[second] == schedule_id

    # a ProvSAP walk follows data, not communications: the runs carry none from one to the
    # next (an hourly schedule's result would otherwise reach back through every run)
    walked = server.session.get(
        f"{server.url}/provsap", params={"ID": second, "DEPTH": "ALL", "DIRECTION": "BACK"}
    ).json()
    assert second in walked["activity"] and first not in walked["activity"]
    assert "wasInformedBy" not in walked

    uri = namespace_uri(server.url)
    found = rows(
        server,
        "SELECT i.informed, i.informant, a.schedule FROM provenance.wasinformedby AS i"
        f" JOIN provenance.activity AS a ON a.id = i.informed WHERE i.informed = '{second}'",
    )
    assert found == [
        {
            "informed": uri + second.removeprefix("opus:"),
            "informant": uri + first.removeprefix("opus:"),
            "schedule": schedule_id,
        }
    ]
    [example] = [e for e in examples(None, None) if e.key == "schedule-runs"]
    listed = [(row["run"], row["previous_run"]) for row in rows(server, example.query)]
    assert listed[0] == (found[0]["informed"], found[0]["informant"])


def test_ticks_missed_while_no_sweep_ran_make_one_job(
    start_server: Callable[..., Server],
) -> None:
    server = start_server()
    made = opus(server, "schedule", "add", "hello", "--every", "1h", "name=late")
    assert made.returncode == 0, made.stderr
    schedule = json.loads(made.stdout)
    # five hours of ticks missed (no OPUS process ran the sweeps): one job, then the next
    # tick an hour from now
    server.sql(
        "UPDATE schedules SET next_run = :t WHERE id = :s",
        {"t": datetime.utcnow() - timedelta(hours=5), "s": schedule["id"]},
    )
    wait_for(lambda: len(jobs_of(server, schedule["id"])) == 1, 15, "the missed tick's job")
    time.sleep(2.5)
    assert len(jobs_of(server, schedule["id"])) == 1
    listed = [json.loads(line) for line in opus(server, "schedule", "list").stdout.splitlines()]
    assert [s["id"] for s in listed] == [schedule["id"]]
    next_run = datetime.fromisoformat(listed[0]["next_run"].rstrip("Z"))
    assert next_run > datetime.utcnow() + timedelta(minutes=59)


def test_schedules_over_rest_are_for_administrators_and_checked(
    start_server: Callable[..., Server],
) -> None:
    server = start_server({"OPUS_ALLOW_ANONYMOUS": "false"})
    admin = opus(server, "user", "add", "root", "--admin").stdout.strip().splitlines()[-1]
    user = opus(server, "user", "add", "bob").stdout.strip().splitlines()[-1]
    url = f"{server.url}/schedules"

    def post(token: str, jobdef: str = "hello", **fields: str) -> tuple[int, str]:
        response = server.session.post(
            f"{url}/{jobdef}", data=fields, headers={"Authorization": f"Bearer {token}"}
        )
        return response.status_code, response.text

    assert post(user, EVERY="5m", name="x")[0] == 403
    status, body = post(admin, EVERY="0.1s", name="x")
    assert status == 400 and "every" in body
    status, body = post(admin, EVERY="5m", CRON="0 * * * *", name="x")
    assert status == 400 and "either" in body
    status, body = post(admin, CRON="61 * * * *", name="x")
    assert status == 400 and "cron" in body
    status, body = post(admin, EVERY="5m", colour="x")
    assert status == 400 and "colour" in body
    status, body = post(admin, "nosuchdef", EVERY="5m")
    assert status == 404
    status, body = post(admin, EVERY="5m", OWNER="nobody", name="x")
    assert status == 400 and "nobody" in body

    status, body = post(admin, CRON="0 * * * *", OWNER="bob", name="hourly")
    assert status == 201, body
    made = json.loads(body)
    assert made["cron"] == "0 * * * *" and made["owner"] == "bob"
    assert made["next_run"].endswith(":00:00.000Z")
    auth = {"Authorization": f"Bearer {admin}"}
    listed = server.session.get(url, headers=auth).json()["schedules"]
    assert [s["id"] for s in listed] == [made["id"]]
    assert server.session.get(url, headers={"Authorization": f"Bearer {user}"}).status_code == 403
    assert server.session.delete(made["url"], headers=auth).status_code == 204
    assert server.session.delete(made["url"], headers=auth).status_code == 404

"""Schema migrations on real databases, SQLite and PostgreSQL.

A database of the first release, at revision 0001 or made by its create_all (no
alembic_version), filled with jobs and provenance, comes out of `opus db upgrade` with
every record intact and the new tables; `python -m opus.store` refuses an outdated
schema untouched and creates an empty one; and the revisions make exactly the live
tables, so that a schema change without its revision fails here.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from opus.cli import main
from opus.ids import NAMESPACES, entity_qname, job_qname
from opus.store import jobs, migrate
from opus.store.db import Database
from opus.store.schema import Base
from provenance import document, query
from provenance import store as prov_store
from tests.servers import ROOT

pytestmark = pytest.mark.any_database  # each test runs on SQLite and on PostgreSQL itself

Capture = pytest.CaptureFixture[str]
IDENTITY_TABLES = {"users", "groups", "memberships", "tokens", "job_shares"}


def key(name: str, kind: Any) -> sa.Column[Any]:
    return sa.Column(name, kind, primary_key=True)


def req(name: str, kind: Any) -> sa.Column[Any]:
    return sa.Column(name, kind, nullable=False)


def opt(name: str, kind: Any) -> sa.Column[Any]:
    return sa.Column(name, kind, nullable=True)


# The tables of revision 0001 (the first release's create_all), written out here: they stay
# what they were whatever the live schema becomes.
V1 = sa.MetaData()
S, T, INT, DT, BOOL = sa.String, sa.Text, sa.Integer, sa.DateTime, sa.Boolean
ID = S(160)
sa.Table(
    "jobs", V1,
    key("id", S(32)), req("jobdef", S(128)), opt("run_id", S(256)), opt("owner", S(256)),
    req("phase", S(16)), req("creation_time", DT), opt("start_time", DT), opt("end_time", DT),
    req("execution_duration", INT), req("destruction", DT), opt("quote", DT),
    opt("error_message", T), opt("error_type", S(16)), opt("worker", S(256)),
    req("dispatch_failed", BOOL), opt("heartbeat", DT), req("attempts", INT),
    sa.Index("ix_jobs_list", "jobdef", "creation_time"),
    sa.Index("ix_jobs_phase", "phase"),
    sa.Index("ix_jobs_destruction", "destruction"),
)  # fmt: skip
sa.Table(
    "job_parameters", V1,
    key("job_id", S(32)), key("name", S(128)), key("position", INT), req("value", T),
    req("by_reference", BOOL),
)  # fmt: skip
sa.Table(
    "entities", V1,
    key("id", S(40)), opt("job_id", S(32)), req("name", S(256)), req("role", S(128)),
    req("origin", S(16)), req("path", T), req("file_name", S(256)),
    req("content_type", S(128)), req("size", sa.BigInteger), req("sha256", S(64)),
    opt("location", T), req("creation_time", DT),
    sa.Index("ix_entities_job_id", "job_id"),
)  # fmt: skip
sa.Table(
    "job_inputs", V1,
    key("job_id", S(32)), key("role", S(128)), key("position", INT), req("entity_id", S(40)),
    sa.Index("ix_job_inputs_entity_id", "entity_id"),
)  # fmt: skip
sa.Table(
    "prov_activity_descriptions", V1,
    key("id", ID), req("name", S(128)), opt("version", S(64)), opt("type", S(128)),
    opt("subtype", S(128)), opt("doculink", T), opt("description", T),
)  # fmt: skip
sa.Table(
    "prov_activities", V1,
    key("id", ID), opt("name", S(256)), opt("start_time", DT), opt("end_time", DT),
    opt("status", S(32)), opt("description_id", ID), opt("context_id", ID), opt("comment", T),
)  # fmt: skip
sa.Table(
    "prov_entities", V1,
    key("id", ID), opt("name", S(256)), opt("location", T), opt("content_type", S(128)),
    opt("size", sa.BigInteger), opt("sha256", S(64)), opt("generated_at", DT),
    opt("kind", S(32)),
)  # fmt: skip
sa.Table(
    "prov_agents", V1,
    key("id", ID), req("type", S(32)), opt("name", S(256)), opt("email", S(256)),
    opt("version", S(64)),
)  # fmt: skip
sa.Table(
    "prov_used", V1,
    key("activity_id", ID), key("entity_id", ID), key("role", S(128)), opt("time", DT),
    sa.Index("ix_prov_used_entity", "entity_id"),
)  # fmt: skip
sa.Table(
    "prov_generations", V1,
    key("entity_id", ID), req("activity_id", ID), opt("role", S(128)), opt("time", DT),
    sa.Index("ix_prov_generations_activity", "activity_id"),
)  # fmt: skip
sa.Table(
    "prov_associations", V1, key("activity_id", ID), key("agent_id", ID), key("role", S(64))
)  # fmt: skip
sa.Table(
    "prov_derivations", V1,
    key("generated_id", ID), key("used_id", ID), opt("activity_id", ID),
    sa.Index("ix_prov_derivations_used", "used_id"),
)  # fmt: skip
sa.Table(
    "prov_parameters", V1,
    key("activity_id", ID), key("name", S(128)), opt("value", T), opt("datatype", S(32)),
    opt("unit", S(64)), opt("ucd", S(128)), opt("min", S(64)), opt("max", S(64)),
    opt("options", T), opt("description", T),
)  # fmt: skip
sa.Table("prov_contexts", V1, key("context_id", ID), key("key", S(128)), opt("value", T))


def at(minute: int) -> datetime:
    return datetime(2026, 3, 1, 12, minute, 5, 250000)


# Two jobs of the first release: `a` made a result that `b` used.
JOB_A, JOB_B = "a1b2c3d4e5f60718", "0f1e2d3c4b5a6978"
UPLOAD, RESULT, OUTPUT = "e0" * 8, "e1" * 8, "e2" * 8
JOBS: list[dict[str, Any]] = [
    dict(
        id=JOB_A, jobdef="hello", run_id="night-1", owner="ada", phase="COMPLETED",
        creation_time=at(0), start_time=at(1), end_time=at(2), execution_duration=600,
        destruction=at(59), quote=at(3), error_message=None, error_type=None,
        worker="host-1:42", dispatch_failed=False, heartbeat=at(2), attempts=1,
    ),
    dict(
        id=JOB_B, jobdef="opus_append", run_id=None, owner=None, phase="ERROR",
        creation_time=at(4), start_time=at(5), end_time=at(6), execution_duration=60,
        destruction=at(58), quote=None, error_message="cannot work: x", error_type="fatal",
        worker=None, dispatch_failed=True, heartbeat=None, attempts=2,
    ),
]  # fmt: skip
PARAMETERS: list[dict[str, Any]] = [
    dict(job_id=JOB_A, name="name", position=0, value="Ada", by_reference=False),
    dict(job_id=JOB_A, name="band", position=1, value="r", by_reference=False),
    dict(job_id=JOB_A, name="band", position=0, value="g", by_reference=False),
    dict(job_id=JOB_B, name="input", position=0, value=f"opus:{RESULT}", by_reference=True),
]
ENTITIES: list[dict[str, Any]] = [
    dict(
        id=UPLOAD, job_id=JOB_A, name="notes", role="notes", origin="upload",
        path=f"uploads/{UPLOAD}", file_name="notes.txt", content_type="text/plain",
        size=12, sha256="0" * 64, location=None, creation_time=at(0),
    ),
    dict(
        id=RESULT, job_id=JOB_A, name="greeting", role="greeting", origin="result",
        path=f"jobs/{JOB_A}/greeting.txt", file_name="greeting.txt", content_type="text/plain",
        size=2**33, sha256="1" * 64, location=None, creation_time=at(2),
    ),
    dict(
        id=OUTPUT, job_id=None, name="input", role="input", origin="download",
        path=f"uploads/{OUTPUT}", file_name="data.fits", content_type="application/fits",
        size=2880, sha256="2" * 64, location="https://example.org/data.fits",
        creation_time=at(4),
    ),
]  # fmt: skip
INPUTS: list[dict[str, Any]] = [
    dict(job_id=JOB_A, role="notes", position=0, entity_id=UPLOAD),
    dict(job_id=JOB_B, role="input", position=0, entity_id=RESULT),
    dict(job_id=JOB_B, role="input", position=1, entity_id=OUTPUT),
]

ACT_A, ACT_B = job_qname(JOB_A), job_qname(JOB_B)
E_UPLOAD, E_RESULT, E_OUTPUT = entity_qname(UPLOAD), entity_qname(RESULT), entity_qname(OUTPUT)
PROVENANCE: dict[str, list[dict[str, Any]]] = {
    "prov_activity_descriptions": [
        dict(
            id="opus:desc_hello", name="hello", version="1.2", type="reduction",
            subtype="greeting", doculink="https://example.org/hello", description="says hello",
        )
    ],
    "prov_activities": [
        dict(
            id=ACT_A, name="hello", start_time=at(1), end_time=at(2), status="COMPLETED",
            description_id="opus:desc_hello", context_id="opus:ctx_1", comment="first",
        ),
        dict(
            id=ACT_B, name="opus_append", start_time=at(5), end_time=at(6), status="ERROR",
            description_id=None, context_id=None, comment=None,
        ),
    ],
    "prov_entities": [
        dict(
            id=E_UPLOAD, name="notes.txt", location=f"uploads/{UPLOAD}",
            content_type="text/plain", size=12, sha256="0" * 64, generated_at=None,
            kind="upload",
        ),
        dict(
            id=E_RESULT, name="greeting.txt", location="https://opus.example/greeting",
            content_type="text/plain", size=2**33, sha256="1" * 64, generated_at=at(2),
            kind="result",
        ),
        dict(
            id=E_OUTPUT, name="data.fits", location="https://example.org/data.fits",
            content_type="application/fits", size=2880, sha256="2" * 64, generated_at=None,
            kind="download",
        ),
    ],
    "prov_agents": [
        dict(id="opus:ada", type="Person", name="Ada", email="ada@example.org", version=None),
        dict(id="opus:server", type="SoftwareAgent", name="OPUS", email=None, version="0.1"),
    ],
    "prov_used": [
        dict(activity_id=ACT_A, entity_id=E_UPLOAD, role="notes", time=at(1)),
        dict(activity_id=ACT_B, entity_id=E_RESULT, role="input", time=at(5)),
        dict(activity_id=ACT_B, entity_id=E_OUTPUT, role="input", time=at(5)),
    ],
    "prov_generations": [
        dict(entity_id=E_RESULT, activity_id=ACT_A, role="greeting", time=at(2)),
    ],
    "prov_associations": [
        dict(activity_id=ACT_A, agent_id="opus:ada", role="owner"),
        dict(activity_id=ACT_A, agent_id="opus:server", role="executor"),
    ],
    "prov_derivations": [
        dict(generated_id=E_RESULT, used_id=E_UPLOAD, activity_id=ACT_A),
    ],
    "prov_parameters": [
        dict(
            activity_id=ACT_A, name="name", value="Ada", datatype="char", unit=None,
            ucd="meta.id", min=None, max=None, options="Ada|Bob", description="who",
        ),
        dict(
            activity_id=ACT_A, name="count", value="3", datatype="int", unit="s",
            ucd=None, min="1", max="9", options=None, description=None,
        ),
    ],
    "prov_contexts": [
        dict(context_id="opus:ctx_1", key="python", value="3.11"),
        dict(context_id="opus:ctx_1", key="package:opus-uws", value="0.1.0"),
    ],
}  # fmt: skip


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An empty database of the test's own."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'opus.sqlite'}"
    else:
        url = str(request.getfixturevalue("postgres_url"))
    database = Database(url)
    yield database
    database.engine.dispose()


def at_revision(db: Database, revision: str) -> None:
    with db.write() as conn:
        command.upgrade(migrate.alembic_config(conn), revision)


def fill(db: Database) -> None:
    """The first release's records, written through tables as 0001 has them."""
    with db.write() as conn:
        for table, rows in [
            ("jobs", JOBS),
            ("job_parameters", PARAMETERS),
            ("entities", ENTITIES),
            ("job_inputs", INPUTS),
            *PROVENANCE.items(),
        ]:
            conn.execute(V1.tables[table].insert(), rows)


def settings_of(db: Database, data_dir: Path) -> dict[str, str]:
    """The OPUS_* variables of a server on the database (SQLite's file is in data_dir)."""
    return {
        "OPUS_DATABASE_URL": db.engine.url.render_as_string(hide_password=False),
        "OPUS_DATA_DIR": str(data_dir),
    }


def run(module: str, db: Database, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m module args` with the database as its settings, as an operator runs it."""
    db.engine.dispose()  # the child may wait for no lock of ours
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPUS_")}
    env |= settings_of(db, data_dir)
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def tables(db: Database) -> set[str]:
    return set(sa.inspect(db.engine).get_table_names())


def revision(db: Database) -> str | None:
    with db.read() as conn:
        return migrate.current(conn)


def live_tables() -> sa.MetaData:
    """The tables the code uses now: OPUS's and the provenance library's, in one."""
    combined = sa.MetaData()
    for table in [*Base.metadata.tables.values(), *prov_store.metadata.tables.values()]:
        table.to_metadata(combined)
    return combined


def differences(db: Database, tables: sa.MetaData) -> list[Any]:
    """What autogenerate would change to make the database hold `tables` (types,
    nullability, indexes, tables and columns), and primary keys, which it does not check."""
    with db.read() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        found: list[Any] = list(compare_metadata(context, tables))
        inspector = sa.inspect(conn)
        for table in tables.sorted_tables:
            if inspector.has_table(table.name):
                held = inspector.get_pk_constraint(table.name)["constrained_columns"]
                declared = [column.name for column in table.primary_key.columns]
                if held != declared:
                    found.append(("primary key", table.name, held, declared))
    return found


def assert_first_release_intact(db: Database) -> None:
    """Every record `fill` wrote, read back with the current code."""
    with db.read() as conn:
        for job in JOBS:
            found = jobs.get_job(conn, job["id"])
            # columns added since are empty for a job of the first release
            assert found is not None
            added = ("parent_id", "reuse_key", "schedule_id", "informed_by", "replaces")
            assert dataclasses.asdict(found) == job | dict.fromkeys(added)
        assert jobs.get_parameters(conn, JOB_A) == [
            jobs.ParameterValue("band", "g", False),
            jobs.ParameterValue("band", "r", False),
            jobs.ParameterValue("name", "Ada", False),
        ]
        assert jobs.get_parameters(conn, JOB_B) == [
            jobs.ParameterValue("input", f"opus:{RESULT}", True)
        ]
        for entity in ENTITIES:
            assert jobs.get_entity(conn, entity["id"]) == jobs.EntityRecord(**entity)
        by_id = {e["id"]: jobs.EntityRecord(**e) for e in ENTITIES}
        assert jobs.get_inputs(conn, JOB_A) == [("notes", by_id[UPLOAD])]
        assert jobs.get_inputs(conn, JOB_B) == [("input", by_id[RESULT]), ("input", by_id[OUTPUT])]
        assert jobs.get_results(conn, JOB_A) == [by_id[RESULT]]

        chosen = query.select_records(conn, [E_RESULT, E_OUTPUT], None, "BACK")
        assert chosen.activities == {ACT_A}
        assert chosen.entities == {E_RESULT, E_UPLOAD, E_OUTPUT}
        assert chosen.agents == {"opus:ada", "opus:server"}
        forth = query.select_records(conn, [E_UPLOAD], None, "FORTH")
        assert forth.activities == {ACT_A, ACT_B}
        shown = query.Selection(
            chosen.activities | forth.activities,
            chosen.entities | forth.entities,
            chosen.agents | forth.agents,
        )
        doc = document.build(conn, shown, NAMESPACES)
    assert_document(doc)


def assert_document(doc: document.Document) -> None:
    elements = {r.id: r for r in doc.records if r.id is not None}
    relations = [(r.kind, r.formal, dict(r.attributes)) for r in doc.records if r.id is None]

    def attributes(record_id: str) -> dict[str, Any]:
        return dict(elements[record_id].attributes)

    a = elements[ACT_A]
    assert (a.kind, a.formal) == ("activity", {"prov:startTime": at(1), "prov:endTime": at(2)})
    assert attributes(ACT_A) == {
        "prov:label": "hello", "voprov:status": "COMPLETED", "voprov:comment": "first"
    }  # fmt: skip
    assert attributes(ACT_B)["voprov:status"] == "ERROR"
    for row in PROVENANCE["prov_entities"]:
        assert attributes(row["id"]) == {
            "prov:label": row["name"], "prov:location": row["location"],
            "voprov:content_type": row["content_type"], "voprov:content_size": row["size"],
            "voprov:sha256": row["sha256"],
        }  # fmt: skip
    assert attributes("opus:ada") == {
        "prov:type": "prov:Person", "prov:label": "Ada", "voprov:email": "ada@example.org"
    }  # fmt: skip
    assert attributes("opus:server")["voprov:version"] == "0.1"
    for row in PROVENANCE["prov_used"]:
        formal = {"prov:activity": row["activity_id"], "prov:entity": row["entity_id"]}
        assert ("used", formal | {"prov:time": row["time"]}, {"prov:role": row["role"]}) in (
            relations
        )
    generated = {"prov:entity": E_RESULT, "prov:activity": ACT_A, "prov:time": at(2)}
    assert ("wasGeneratedBy", generated, {"prov:role": "greeting"}) in relations
    for agent, role in [("opus:ada", "owner"), ("opus:server", "executor")]:
        formal = {"prov:activity": ACT_A, "prov:agent": agent}
        assert ("wasAssociatedWith", formal, {"prov:role": role}) in relations
    derived = {
        "prov:generatedEntity": E_RESULT,
        "prov:usedEntity": E_UPLOAD,
        "prov:activity": ACT_A,
    }
    assert ("wasDerivedFrom", derived, {}) in relations
    assert attributes("opus:desc_hello") == {
        "prov:type": "voprov:ActivityDescription", "voprov:name": "hello",
        "voprov:version": "1.2", "voprov:type": "reduction", "voprov:subtype": "greeting",
        "voprov:doculink": "https://example.org/hello", "voprov:description": "says hello",
    }  # fmt: skip
    assert attributes(f"{ACT_A}_par_name") == {
        "prov:type": "voprov:Parameter", "prov:value": "Ada", "voprov:name": "name",
        "voprov:datatype": "char", "voprov:ucd": "meta.id", "voprov:options": "Ada|Bob",
        "voprov:description": "who",
    }  # fmt: skip
    assert attributes(f"{ACT_A}_par_count") == {
        "prov:type": "voprov:Parameter", "prov:value": "3", "voprov:name": "count",
        "voprov:datatype": "int", "voprov:unit": "s", "voprov:min": "1", "voprov:max": "9",
    }  # fmt: skip
    assert attributes("opus:ctx_1") == {
        "prov:type": "voprov:Context", "voprov:context_python": "3.11",
        "voprov:context_package_opus_uws": "0.1.0",
    }  # fmt: skip


@pytest.mark.parametrize("made_by", ["alembic", "create_all"])
def test_a_first_release_database_upgrades_with_every_record(
    db: Database, tmp_path: Path, made_by: str
) -> None:
    """At revision 0001, or made by the first release's create_all (no alembic_version)."""
    if made_by == "alembic":
        at_revision(db, "0001")
    else:
        V1.create_all(db.engine)
    fill(db)
    assert revision(db) == migrate.LEGACY == "0001"

    done = run("opus.cli", db, tmp_path, "db", "upgrade")
    assert done.returncode == 0, done.stderr
    assert f"from 0001 to {migrate.head()}" in done.stdout

    assert revision(db) == migrate.head()
    assert tables(db) >= IDENTITY_TABLES
    assert_first_release_intact(db)
    assert differences(db, live_tables()) == []

    assert migrate.upgrade(db) == (migrate.head(), migrate.head())  # again: nothing to do


def db_current(
    db: Database, data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> tuple[str, str]:
    """`opus db current` (in this process: its output, and its notes to stderr)."""
    for name in [k for k in os.environ if k.startswith("OPUS_")]:
        monkeypatch.delenv(name)
    for name, value in settings_of(db, data_dir).items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    assert main(["db", "current"]) == 0
    out, err = capsys.readouterr()
    return out.strip(), err


def test_opus_db_current_prints_the_revision(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    assert db_current(db, tmp_path, monkeypatch, capsys)[0] == ""  # empty
    at_revision(db, "0001")
    out, err = db_current(db, tmp_path, monkeypatch, capsys)
    assert out == "0001" and "opus db upgrade" in err
    V1.drop_all(db.engine)
    with db.write() as conn:
        conn.execute(sa.text("DROP TABLE alembic_version"))
    V1.create_all(db.engine)
    assert db_current(db, tmp_path, monkeypatch, capsys)[0] == "0001"  # made before migrations
    migrate.upgrade(db)
    assert db_current(db, tmp_path, monkeypatch, capsys) == (migrate.head(), "")


def test_opus_store_refuses_an_outdated_schema_and_changes_nothing(
    db: Database, tmp_path: Path
) -> None:
    at_revision(db, "0001")
    fill(db)
    before = tables(db)

    done = run("opus.store", db, tmp_path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    message = done.stderr.strip()
    assert message.startswith("opus: ") and "Traceback" not in message
    assert "0001" in message and migrate.head() in message and "opus db upgrade" in message
    assert tables(db) == before and not IDENTITY_TABLES & before
    assert revision(db) == "0001"
    with pytest.raises(migrate.SchemaOutdated, match="opus db upgrade"):
        db.create_schema()  # what `opus worker` and `opus beat` run first


def test_opus_store_creates_an_empty_database_at_head(db: Database, tmp_path: Path) -> None:
    done = run("opus.store", db, tmp_path)
    assert done.returncode == 0, done.stderr
    assert revision(db) == migrate.head()
    assert differences(db, live_tables()) == []
    db.create_schema()  # at head: nothing to do
    with db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(jobs.jobs)).scalar() == 0


def test_the_revisions_make_the_tables_of_each_release(db: Database) -> None:
    """0001 is the first release's create_all; head is the live tables (a schema change
    without its revision fails here); and each downgrade undoes its upgrade."""
    at_revision(db, "0001")
    assert differences(db, V1) == []
    at_revision(db, "head")
    assert differences(db, live_tables()) == []
    with db.write() as conn:
        command.downgrade(migrate.alembic_config(conn), "0001")
    assert differences(db, V1) == []
    with db.write() as conn:
        command.downgrade(migrate.alembic_config(conn), "base")
    assert tables(db) == {"alembic_version"}


def test_a_revision_newer_than_the_code_is_refused(db: Database) -> None:
    at_revision(db, "head")
    with db.write() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(migrate.SchemaUnknown, match="9999"):
        db.create_schema()
    with pytest.raises(migrate.SchemaUnknown, match="newer OPUS"):
        migrate.upgrade(db)

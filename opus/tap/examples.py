"""The examples /tap/examples shows: ADQL queries a user of this server can run as they
are, on identifiers of its own store (the newest entity and activity the reader may see).
The tests run every one of them, so that the page cannot rot.

The lineage functions are table functions in FROM, which no ADQL grammar has (ADQL's
user-defined functions are scalar): their examples are on the page, runnable, but not
marked as DALI examples, whose queries validators parse as plain ADQL."""

from __future__ import annotations

from opus.tap.documents import Example

EXAMPLE_ENTITY = "urn:example:no-entity-yet"


def examples(entity: str | None, activity: str | None) -> list[Example]:
    """The examples for a reader whose newest visible entity and activity are these
    (URIs; None where there is none yet: the queries still run and find nothing)."""
    e = (entity or EXAMPLE_ENTITY).replace("'", "''")
    a = (activity or EXAMPLE_ENTITY).replace("'", "''")
    return [
        Example(
            "newest-results",
            "The newest results",
            "The ten results generated last, with the job that generated each.",
            "SELECT TOP 10 e.id, e.name, e.generatedAtTime, g.activity\n"
            "FROM provenance.entity AS e\n"
            "JOIN provenance.wasgeneratedby AS g ON g.entity = e.id\n"
            "ORDER BY generatedAtTime DESC",
        ),
        Example(
            "precursors",
            "Everything an entity came from",
            "The precursors of an entity, walking back through the jobs that generated "
            "it and the inputs they used, at most 20 hops: lineage in ADQL.",
            "SELECT p.id, p.node_type, p.depth, p.relation\n"
            f"FROM find_prov_precursors('{e}', 20) AS p\n"
            "ORDER BY depth",
            lineage=True,
        ),
        Example(
            "descendants-to-redo",
            "What to re-process after a bad input",
            "Every file made, directly or not, from an activity's outputs: the "
            "descendants that are entities, with where their bytes are.",
            "SELECT d.depth, e.id, e.location\n"
            f"FROM find_prov_descendants('{a}', 50) AS d\n"
            "JOIN provenance.entity AS e ON e.id = d.id\n"
            "WHERE d.node_type = 'entity'\n"
            "ORDER BY depth",
            lineage=True,
        ),
        Example(
            "jobs-by-parameter",
            "Jobs by parameter value",
            "The jobs of each definition with their parameters' values.",
            "SELECT TOP 50 a.name, p.name AS parameter, p.paramValue, a.startTime\n"
            "FROM provenance.activity AS a\n"
            "JOIN provenance.parameter AS p ON p.activity = a.id\n"
            "ORDER BY startTime DESC",
        ),
        Example(
            "definitions",
            "Job definitions that ran",
            "How many jobs of each activity description ended in each phase.",
            "SELECT d.name, d.version, a.status, COUNT(*) AS jobs\n"
            "FROM provenance.activitydescription AS d\n"
            "JOIN provenance.activity AS a ON a.activityDescription = d.id\n"
            "GROUP BY d.name, d.version, a.status",
        ),
        Example(
            "owners",
            "Who ran what",
            "Each agent with the role it played and the number of activities.",
            "SELECT g.name, w.role, COUNT(*) AS activities\n"
            "FROM provenance.agent AS g\n"
            "JOIN provenance.wasassociatedwith AS w ON w.agent = g.id\n"
            "GROUP BY g.name, w.role",
        ),
        Example(
            "invalidated",
            "Files found wrong",
            "Each invalidated entity with when and why it was invalidated, and the jobs "
            "that used it (to re-process: opus prov rerun).",
            "SELECT i.entity, i.atTime AS invalidated, a.comment AS reason, u.activity AS used_by\n"
            "FROM provenance.wasinvalidatedby AS i\n"
            "JOIN provenance.activity AS a ON a.id = i.activity\n"
            "LEFT OUTER JOIN provenance.used AS u ON u.entity = i.entity\n"
            "ORDER BY invalidated DESC",
        ),
        Example(
            "schedule-runs",
            "The runs of a schedule",
            "Each job a schedule's ticks made after the first, oldest first, with the run "
            "it was informed by: the schedule's previous run.",
            "SELECT a.schedule AS schedule_id, a.id AS run, a.startTime AS started,"
            " a.status, i.informant AS previous_run\n"
            "FROM provenance.activity AS a\n"
            "JOIN provenance.wasinformedby AS i ON i.informed = a.id\n"
            "JOIN provenance.activity AS p ON p.id = i.informant\n"
            "WHERE a.schedule IS NOT NULL AND p.schedule = a.schedule\n"
            "ORDER BY schedule_id, started",
        ),
    ]

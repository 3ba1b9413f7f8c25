"""Lineage in the database: precursors (BACK) and descendants (FORTH) by recursive queries.

The graph walked is entity -> generating activity -> used entity -> ... (BACK)
or entity -> using activity -> generated entity -> ... (FORTH). DEPTH counts
those hops; the agents, descriptions, parameters and context of every activity
reached come along without counting. Communications (wasInformedBy: a schedule's run
and the one before it) are shown between the activities a walk returns, never walked:
they carry no data from one run to the next. The walk is cycle-safe: a bounded depth
stops it, and with no bound each node is visited once (UNION, not UNION ALL).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    case,
    cast,
    func,
    literal,
    or_,
    select,
    union,
    union_all,
)
from sqlalchemy import String as SqlString
from sqlalchemy.sql.selectable import SelectBase

from provenance import store

__all__ = [
    "REACHES",
    "Allowed",
    "Direction",
    "Downstream",
    "Selection",
    "activity_records",
    "communicating",
    "downstream",
    "invalidations",
    "known_ids",
    "lineage",
    "select_records",
    "walk",
]

Direction = Literal["BACK", "FORTH"]
# What a reader may see: a condition on an id column, true for the ids of the activities
# and entities they may see (evaluated per row, so that the walk checks the nodes it
# reaches, not a set of every visible id made first)
Allowed = Callable[[Any], ColumnElement[bool]]


@dataclass
class Selection:
    """The identifiers of the records to show."""

    activities: set[str] = field(default_factory=set)
    entities: set[str] = field(default_factory=set)
    agents: set[str] = field(default_factory=set)
    # Records shown whose next step in the walk the caller may not see: id -> how many
    hidden: dict[str, int] = field(default_factory=dict)
    direction: Direction = "BACK"  # of the walk the hidden steps belong to


# The relation an edge of the walk follows, which also says what it reaches: walking BACK,
# wasGeneratedBy leads from an entity to an activity and used from an activity to an
# entity; walking FORTH, used leads to activities and wasGeneratedBy to entities.
REACHES = {
    ("BACK", "wasGeneratedBy"): "activity",
    ("BACK", "used"): "entity",
    ("FORTH", "used"): "activity",
    ("FORTH", "wasGeneratedBy"): "entity",
}


def _edges(direction: Direction, allowed: Allowed | None = None) -> Any:
    """The walk's edges src -> dst with their relation; with `allowed`, only those into an
    allowed node."""
    gen, use = store.generations.c, store.used.c
    generated = select(
        gen.entity_id.label("src"), gen.activity_id.label("dst"), _text("wasGeneratedBy")
    )
    used = select(use.activity_id.label("src"), use.entity_id.label("dst"), _text("used"))
    if direction == "FORTH":
        generated = select(
            gen.activity_id.label("src"), gen.entity_id.label("dst"), _text("wasGeneratedBy")
        )
        used = select(use.entity_id.label("src"), use.activity_id.label("dst"), _text("used"))
    if allowed is not None:
        generated = generated.where(allowed(generated.selected_columns.dst))
        used = used.where(allowed(used.selected_columns.dst))
    return union_all(generated, used).cte("edges")


def _step(walk: Any, direction: Direction, allowed: Allowed | None) -> tuple[Any, Any, Any]:
    """One hop from the walk's nodes: (the FROM of the hop, the node reached, the relation
    that reached it). Both relations are joined to each node (one of them matches: a
    node is an entity or an activity), so that each lookup is an index's, in one
    recursive term (PostgreSQL allows the CTE only once in it)."""
    g = store.generations.alias("hop_generated")
    u = store.used.alias("hop_used")
    if direction == "BACK":
        via_g, via_u = g.c.activity_id, u.c.entity_id
        joined = walk.outerjoin(g, g.c.entity_id == walk.c.node).outerjoin(
            u, u.c.activity_id == walk.c.node
        )
    else:
        via_g, via_u = g.c.entity_id, u.c.activity_id
        joined = walk.outerjoin(g, g.c.activity_id == walk.c.node).outerjoin(
            u, u.c.entity_id == walk.c.node
        )
    reached = func.coalesce(via_g, via_u)
    relation = case((via_g.is_not(None), "wasGeneratedBy"), else_="used")
    condition = or_(via_g.is_not(None), via_u.is_not(None))
    if allowed is not None:
        condition = and_(condition, allowed(reached))
    return joined, (reached, relation), condition


def _text(value: str) -> Any:
    return literal(value, SqlString).label("relation")


def lineage(
    seeds: SelectBase,
    depth: int,
    direction: Direction,
    allowed: Allowed | None = None,
    name: str = "lineage",
) -> Any:
    """The nodes a bounded walk reaches from each seed, as a recursive CTE.

    Args:
        seeds: A SELECT (or a textual one) of two columns, `origin` and `node`: where each
            walk starts (the origin is carried along, so that many walks run as one query).
        depth: Hops at most (entity -> activity or activity -> entity), 1 or more.
        direction: BACK to precursors, FORTH to descendants.
        allowed: The ids the walk may enter, as in `walk` (None: all).
        name: The CTE's name (unique within one statement).

    Returns:
        A CTE of (origin, node, depth, relation): every node reached at every depth up to
        `depth` (a node reached along several paths has several rows; the start nodes have
        depth 0 and no relation). Bounded by `depth`, it ends on any graph, cycles included.
    """
    # One type for each column in both terms (PostgreSQL requires it of a recursive CTE)
    starts = seeds.subquery("seeds")
    anchor = select(
        cast(starts.c.origin, SqlString()).label("origin"),
        cast(starts.c.node, SqlString()).label("node"),
        literal(0).label("depth"),
        cast(literal(None), SqlString()).label("relation"),
    )
    walk_cte = anchor.cte(name, recursive=True)
    joined, (reached, relation), condition = _step(walk_cte, direction, allowed)
    step = (
        select(
            walk_cte.c.origin,
            cast(reached, SqlString()),
            (walk_cte.c.depth + 1),
            cast(relation, SqlString()),
        )
        .select_from(joined)
        .where(condition, walk_cte.c.depth < depth)
    )
    return walk_cte.union(step)


def _hidden(
    conn: Connection, nodes: set[str], direction: Direction, allowed: Allowed
) -> dict[str, int]:
    """For the nodes shown, how many of their next nodes lie outside `allowed`."""
    edges = _edges(direction)
    rows = conn.execute(
        select(edges.c.src, func.count())
        .where(edges.c.src.in_(sorted(nodes)), ~allowed(edges.c.dst))
        .group_by(edges.c.src)
    )
    return {row[0]: int(row[1]) for row in rows}


def walk(
    conn: Connection,
    start: Iterable[str],
    depth: int | None,
    direction: Direction,
    allowed: Allowed | None = None,
) -> set[str]:
    """The lineage graph walked from some nodes.

    Args:
        conn: A connection to the provenance tables.
        start: Ids of the entities or activities to start from.
        depth: Hops at most (entity -> activity or activity -> entity); None: no limit.
        direction: BACK to precursors, FORTH to descendants.
        allowed: Which ids the walk may enter (`Allowed`, a condition on an id column;
            None: all); the walk stops at any other node.

    Returns:
        The ids of every node reached, the start nodes included.
    """
    starts = sorted(set(start))
    if not starts:
        return set()
    seeds = union_all(
        *(
            select(literal(s, SqlString).label("origin"), literal(s, SqlString).label("node"))
            for s in starts
        )
    )
    if depth is None:
        anchor = select(cast(seeds.subquery().c.node, SqlString()).label("node"))
        walk_cte = anchor.cte("walk", recursive=True)
        joined, (reached, _), condition = _step(walk_cte, direction, allowed)
        step = select(cast(reached, SqlString())).select_from(joined).where(condition)
        everything = walk_cte.union(step)
        return {row[0] for row in conn.execute(select(everything.c.node))}
    if depth == 0:
        return set(starts)
    found = lineage(seeds, depth, direction, allowed)
    return {row[0] for row in conn.execute(select(found.c.node).distinct())}


def select_records(
    conn: Connection,
    ids: Iterable[str],
    depth: int | None,
    direction: Direction,
    with_agents: bool = True,
    allowed: Allowed | None = None,
) -> Selection:
    """The activities, entities and agents to show for a ProvSAP-style request.

    Args:
        conn: A connection to the provenance tables.
        ids: Ids of the entities or activities asked for.
        depth: Hops at most, as in `walk`; None: no limit.
        direction: BACK to precursors, FORTH to descendants.
        with_agents: Also the agents associated with the activities reached.
        allowed: The ids the caller may see, as in `walk` (None: all); the Selection's
            `hidden` counts the steps it did not take.

    Returns:
        The Selection of the records found.
    """
    nodes = walk(conn, ids, depth, direction, allowed)
    chosen = list(nodes)
    found = Selection()
    if not chosen:
        return found
    found.activities = {
        r[0]
        for r in conn.execute(
            select(store.activities.c.id).where(store.activities.c.id.in_(chosen))
        )
    }
    found.entities = {
        r[0]
        for r in conn.execute(select(store.entities.c.id).where(store.entities.c.id.in_(chosen)))
    }
    # an entity shown comes with its invalidation (not a step of the walk: it ends there)
    found.activities |= {a for a, _ in invalidations(conn, found.entities).values()}
    if with_agents and found.activities:
        found.agents = {
            r[0]
            for r in conn.execute(
                select(store.associations.c.agent_id).where(
                    store.associations.c.activity_id.in_(list(found.activities))
                )
            )
        }
    found.agents |= _present(conn, store.agents, chosen)
    if allowed is not None:
        found.hidden = _hidden(conn, nodes, direction, allowed)
        found.direction = direction
    return found


def _present(conn: Connection, table: Any, ids: list[str]) -> set[str]:
    return {r[0] for r in conn.execute(select(table.c.id).where(table.c.id.in_(ids)))}


def activity_records(
    conn: Connection, activity_id: str, with_agents: bool = True, allowed: Allowed | None = None
) -> Selection:
    """An activity with what it used, what it generated, its agents, and the activities it
    was informed by or informed (its communications are its own relations, though a walk
    counts them two hops).

    Args:
        conn: A connection to the provenance tables.
        activity_id: The id of the activity.
        with_agents: Also the agents associated with the activity (and with the
            activities it communicated with).
        allowed: The activities the reader may see, as in `walk` (None: all): the others
            it communicated with are left out.

    Returns:
        The Selection of the activity and the records one hop from it each way.
    """
    chosen = select_records(conn, [activity_id], 1, "BACK", with_agents)
    forth = select_records(conn, [activity_id], 1, "FORTH", with_agents)
    chosen.entities |= forth.entities
    chosen.activities |= forth.activities  # the invalidations of what it generated
    chosen.agents |= forth.agents
    others = communicating(conn, [activity_id], allowed) - chosen.activities
    if others:
        chosen.activities |= others
        if with_agents:
            s = store.associations.c
            agents = select(s.agent_id).where(s.activity_id.in_(sorted(others))).distinct()
            chosen.agents |= {row[0] for row in conn.execute(agents)}
    return chosen


def communicating(
    conn: Connection, activity_ids: Iterable[str], allowed: Allowed | None = None
) -> set[str]:
    """The recorded activities that some activities were informed by or informed.

    Args:
        conn: A connection to the provenance tables.
        activity_ids: Ids of activities.
        allowed: The ids the reader may see, as in `walk` (None: all).

    Returns:
        The ids of the activities on the other side of their communications.
    """
    wanted = sorted(set(activity_ids))
    if not wanted:
        return set()
    c, a = store.communications.c, store.activities.c
    queries = [
        select(c.informant.label("id")).where(c.informed.in_(wanted)),
        select(c.informed.label("id")).where(c.informant.in_(wanted)),
    ]
    others = union(*queries).subquery()
    recorded = select(a.id).where(a.id.in_(select(others.c.id)))
    if allowed is not None:
        recorded = recorded.where(allowed(a.id))
    return {row[0] for row in conn.execute(recorded)}


def known_ids(conn: Connection, ids: Iterable[str], allowed: Allowed | None = None) -> set[str]:
    """Which ids name a recorded record.

    Args:
        conn: A connection to the provenance tables.
        ids: Qualified names.
        allowed: The activity and entity ids the caller may see (None: all).

    Returns:
        Those of `ids` that are the id of a stored activity, entity or agent (with
        `allowed`: the allowed activities and entities, and the agents of allowed
        activities).
    """
    wanted = list(set(ids))
    queries = []
    for table in (store.activities, store.entities, store.agents):
        query = select(table.c.id).where(table.c.id.in_(wanted))
        if allowed is not None and table is store.agents:  # agents of allowed activities
            associated = store.associations
            query = query.where(
                table.c.id.in_(
                    select(associated.c.agent_id).where(allowed(associated.c.activity_id))
                )
            )
        elif allowed is not None:
            query = query.where(allowed(table.c.id))
        queries.append(query)
    return {row[0] for row in conn.execute(union(*queries))}


def invalidations(conn: Connection, entity_ids: Iterable[str]) -> dict[str, tuple[str, Any]]:
    """The invalidations of some entities.

    Args:
        conn: A connection to the provenance tables.
        entity_ids: Ids of entities.

    Returns:
        Entity id -> (the invalidation activity's id, the time), for those invalidated.
    """
    wanted = sorted(set(entity_ids))
    if not wanted:
        return {}
    i = store.invalidations.c
    rows = conn.execute(select(i.entity_id, i.activity_id, i.time).where(i.entity_id.in_(wanted)))
    return {row[0]: (row[1], row[2]) for row in rows}


@dataclass
class Downstream:
    """What was made from some entities, each in an order its inputs come before it."""

    entities: list[str] = field(default_factory=list)
    activities: list[str] = field(default_factory=list)
    # activity -> the activities of the list whose generated entities it used
    informed_by: dict[str, set[str]] = field(default_factory=dict)


def downstream(conn: Connection, ids: Iterable[str], allowed: Allowed | None = None) -> Downstream:
    """Every entity and activity downstream of some entities: the FORTH walk with no depth
    limit (in SQL, as `walk`), put in dependency order. Like every walk, it follows no
    communication (wasInformedBy): an informed activity used no entity of its informant's.

    Args:
        conn: A connection to the provenance tables.
        ids: Ids of the entities to start from (not in the result).
        allowed: The ids the walk may enter, as in `walk` (None: all).

    Returns:
        The Downstream: activities after those whose entities they used (ties, and what
        a cycle leaves, by start time then id); entities in the order of the activities
        that generated them.
    """
    starts = set(ids)
    reached = walk(conn, starts, None, "FORTH", allowed) - starts
    if not reached:
        return Downstream()
    a, g, u = store.activities.c, store.generations.c, store.used.c
    nodes = sorted(reached)
    started = {
        row[0]: row[1] for row in conn.execute(select(a.id, a.start_time).where(a.id.in_(nodes)))
    }
    informed: dict[str, set[str]] = {activity: set() for activity in started}
    pairs = conn.execute(
        select(u.activity_id, g.activity_id)
        .join_from(store.used, store.generations, g.entity_id == u.entity_id)
        .where(u.activity_id.in_(list(started)), g.activity_id.in_(list(started)))
        .distinct()
    )
    for later, earlier in pairs:
        if later != earlier:
            informed[later].add(earlier)
    order = _dependency_order(informed, lambda n: (str(started[n] or ""), n))
    place = {activity: n for n, activity in enumerate(order)}
    makers = conn.execute(
        select(g.entity_id, g.activity_id).where(g.entity_id.in_(nodes), g.activity_id.in_(order))
    )
    made = {entity: place[activity] for entity, activity in makers}
    entities = _present(conn, store.entities, [n for n in nodes if n not in started])
    return Downstream(sorted(entities, key=lambda e: (made.get(e, len(order)), e)), order, informed)


def _dependency_order(after: dict[str, set[str]], key: Callable[[str], Any]) -> list[str]:
    """The nodes, each after those it comes after (Kahn's algorithm; what a cycle leaves
    goes last, by `key`)."""
    waiting = {node: set(before) & after.keys() for node, before in after.items()}
    order: list[str] = []
    while waiting:
        ready = sorted((n for n, before in waiting.items() if not before), key=key)
        if not ready:  # a cycle: the rest in key order
            ready = sorted(waiting, key=key)
        order += ready
        for node in ready:
            del waiting[node]
        for before in waiting.values():
            before.difference_update(ready)
    return order

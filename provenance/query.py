"""Lineage in the database: precursors (BACK) and descendants (FORTH) by recursive queries.

The graph walked is entity -> generating activity -> used entity -> ... (BACK)
or entity -> using activity -> generated entity -> ... (FORTH). DEPTH counts
those hops; the agents, descriptions, parameters and context of every activity
reached come along without counting. The walk is cycle-safe: a bounded depth
stops it, and with no bound each node is visited once (UNION, not UNION ALL).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import CompoundSelect, Connection, Select, func, literal, select, union, union_all
from sqlalchemy import String as SqlString

from provenance import store

__all__ = [
    "Allowed",
    "Direction",
    "Selection",
    "activity_records",
    "known_ids",
    "select_records",
    "walk",
]

Direction = Literal["BACK", "FORTH"]
# A one-column SELECT of the ids a reader may see
Allowed = Select[Any] | CompoundSelect[Any]


@dataclass
class Selection:
    """The identifiers of the records to show."""

    activities: set[str] = field(default_factory=set)
    entities: set[str] = field(default_factory=set)
    agents: set[str] = field(default_factory=set)
    # Records shown whose next step in the walk the caller may not see: id -> how many
    hidden: dict[str, int] = field(default_factory=dict)
    direction: Direction = "BACK"  # of the walk the hidden steps belong to


def _edges(direction: Direction, allowed: Allowed | None = None) -> Any:
    """The walk's edges src -> dst; with `allowed`, only those into an allowed node."""
    generated = select(
        store.generations.c.entity_id.label("src"), store.generations.c.activity_id.label("dst")
    )
    used = select(store.used.c.activity_id.label("src"), store.used.c.entity_id.label("dst"))
    if direction == "FORTH":
        generated = select(
            store.generations.c.activity_id.label("src"),
            store.generations.c.entity_id.label("dst"),
        )
        used = select(store.used.c.entity_id.label("src"), store.used.c.activity_id.label("dst"))
    if allowed is not None:
        generated = generated.where(generated.selected_columns.dst.in_(allowed))
        used = used.where(used.selected_columns.dst.in_(allowed))
    return union_all(generated, used).cte("edges")


def _hidden(
    conn: Connection, nodes: set[str], direction: Direction, allowed: Allowed
) -> dict[str, int]:
    """For the nodes shown, how many of their next nodes lie outside `allowed`."""
    edges = _edges(direction)
    rows = conn.execute(
        select(edges.c.src, func.count())
        .where(edges.c.src.in_(sorted(nodes)), edges.c.dst.not_in(allowed))
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
        allowed: A one-column SELECT of the ids the walk may enter (None: all); the walk
            stops at any other node.

    Returns:
        The ids of every node reached, the start nodes included.
    """
    starts = sorted(set(start))
    if not starts:
        return set()
    edges = _edges(direction, allowed)
    seeds = union_all(*(select(literal(s, SqlString).label("node")) for s in starts)).subquery()
    if depth is None:
        anchor = select(seeds.c.node)
        walk_cte = anchor.cte("walk", recursive=True)
        step = select(edges.c.dst).join(walk_cte, edges.c.src == walk_cte.c.node)
        walk_cte = walk_cte.union(step)
        return {row[0] for row in conn.execute(select(walk_cte.c.node))}
    anchor = select(seeds.c.node, literal(0).label("depth"))
    walk_cte = anchor.cte("walk", recursive=True)
    step = (
        select(edges.c.dst, (walk_cte.c.depth + 1).label("depth"))
        .join(walk_cte, edges.c.src == walk_cte.c.node)
        .where(walk_cte.c.depth < depth)
    )
    walk_cte = walk_cte.union(step)
    return {row[0] for row in conn.execute(select(walk_cte.c.node).distinct())}


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


def activity_records(conn: Connection, activity_id: str, with_agents: bool = True) -> Selection:
    """An activity with what it used, what it generated and its agents.

    Args:
        conn: A connection to the provenance tables.
        activity_id: The id of the activity.
        with_agents: Also the agents associated with the activity.

    Returns:
        The Selection of the activity and the records one hop from it each way.
    """
    chosen = select_records(conn, [activity_id], 1, "BACK", with_agents)
    chosen.entities |= select_records(conn, [activity_id], 1, "FORTH", with_agents).entities
    return chosen


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
                    select(associated.c.agent_id).where(associated.c.activity_id.in_(allowed))
                )
            )
        elif allowed is not None:
            query = query.where(table.c.id.in_(allowed))
        queries.append(query)
    return {row[0] for row in conn.execute(union(*queries))}

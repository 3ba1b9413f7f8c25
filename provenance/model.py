"""ProvDM records as plain data: what an activity recorded, before it is stored.

Identifiers are qualified names, ``prefix:local`` (e.g. ``opus:job_1a2b``),
NCName-safe so that every serialization (PROV-XML included) stays valid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

__all__ = [
    "VOPROV",
    "Activity",
    "ActivityDescription",
    "Agent",
    "AgentType",
    "Entity",
    "Invalidation",
    "Parameter",
    "RoleDescription",
]

VOPROV = "http://www.ivoa.net/documents/ProvenanceDM/ns/voprov/"

AgentType = Literal["Person", "SoftwareAgent", "Organization"]


@dataclass(frozen=True)
class RoleDescription:
    """A UsageDescription or GenerationDescription: a role an activity of some kind uses
    or generates an entity in, and what such an entity is (its EntityDescription)."""

    role: str
    description: str = ""
    multiplicity: str = "1"  # a number, or "*"
    content_type: str = ""


@dataclass(frozen=True)
class ActivityDescription:
    """What kind of activity this is (shared by every run of it): name, version, type...,
    and the roles it uses and generates entities in."""

    id: str
    name: str
    version: str = ""
    type: str = ""
    subtype: str = ""
    doculink: str = ""
    description: str = ""
    used: tuple[RoleDescription, ...] = ()
    generated: tuple[RoleDescription, ...] = ()

    def row(self) -> dict[str, str]:
        """The columns of its own table (the roles have tables of their own)."""
        return {k: v for k, v in vars(self).items() if k not in ("used", "generated")}


@dataclass(frozen=True)
class Entity:
    """A file or value used or generated; `location`, `size` and `sha256` when known."""

    id: str
    name: str
    location: str | None = None
    content_type: str | None = None
    size: int | None = None
    sha256: str | None = None
    generated_at: datetime | None = None
    kind: str | None = None


@dataclass(frozen=True)
class Agent:
    """Who or what is responsible for an activity (a person, software or organization)."""

    id: str
    type: AgentType
    name: str
    email: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class Parameter:
    """A parameter value with its ParameterDescription (datatype, unit, bounds...)."""

    name: str
    value: str
    datatype: str | None = None
    unit: str | None = None
    ucd: str | None = None
    min: str | None = None
    max: str | None = None
    options: str | None = None
    description: str | None = None


@dataclass
class Activity:
    """One run of an activity and everything it touched."""

    id: str
    name: str
    description: ActivityDescription
    start_time: datetime | None = None
    end_time: datetime | None = None
    status: str | None = None
    comment: str | None = None
    parameters: list[Parameter] = field(default_factory=list)
    used: list[tuple[Entity, str]] = field(default_factory=list)  # (entity, role)
    generated: list[tuple[Entity, str]] = field(default_factory=list)
    agents: list[tuple[Agent, str]] = field(default_factory=list)  # (agent, role)
    context: dict[str, str] = field(default_factory=dict)
    # (generated id, used id) pairs: which output came from which input, where the activity
    # knows; None: every generated entity derived from every used one
    derivations: list[tuple[str, str]] | None = None
    # the id of the activity this one was run again in place of (an input of that one
    # was invalidated): the reader finds the earlier run from the later
    replaces: str | None = None
    # ids of the activities this one was informed by (PROV's wasInformedBy: it depended
    # on them, through something they made that no entity of the record names, e.g. the
    # previous run of a schedule)
    informed_by: list[str] = field(default_factory=list)
    # attributes of the caller's own vocabulary, qualified name -> text (its prefix one
    # of the document's namespaces), written on the activity in every format
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Invalidation:
    """The end of an entity's validity (PROV wasInvalidatedBy): an activity of its own,
    when, why, and the agent responsible (e.g. the person who found the entity wrong)."""

    entity_id: str
    activity_id: str
    time: datetime
    reason: str
    agent: Agent
    role: str = "invalidator"  # the agent's role in the invalidation activity
    name: str = "invalidation"  # the invalidation activity's name

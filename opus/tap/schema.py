"""What TAP exposes: the `provenance` schema (IVOA ProvDM classes as tables, views over the
store's tables) and `tap_schema`, described once here.

Every table is a list of columns (name, VOTable type, unit, UCD, `voprov:` utype,
description) and a source: a SELECT over the store with one column per exposed column,
built for one reader (the visibility rule of `opus.auth` is part of every source: a view
holds only rows of what the reader may see) and one server (identifiers are the absolute
URIs of `ids.namespace_uri`, stored locations are made absolute). TAP_SCHEMA, the VOSI
tables document and the results' FIELDs are all written from these descriptions.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    case,
    exists,
    func,
    literal,
    select,
    true,
    union,
)
from sqlalchemy import String as SqlString

from opus.ids import SCHEDULE_ATTRIBUTE
from provenance import store as prov
from provenance.query import Allowed

PROVENANCE = "provenance"
TAP_SCHEMA = "tap_schema"
TAP_UPLOAD = "tap_upload"
VOPROV = "voprov:"
PROVDM = "ivo://ivoa.net/std/ProvenanceDM"


@dataclass(frozen=True)
class TapColumn:
    name: str  # as TAP_SCHEMA and results write it; matched without regard to case
    datatype: str  # VOTable: char, short, int, long, float, double, boolean
    description: str
    utype: str | None = None
    ucd: str | None = None
    unit: str | None = None
    arraysize: str | None = "*"
    xtype: str | None = None
    principal: bool = True
    indexed: bool = False
    std: bool = False

    @property
    def key(self) -> str:
        """Its name in the SQL the translator writes (lower case: both databases agree;
        a delimited name, as tap_schema.columns."size", without its quotes)."""
        return self.name.strip('"').lower()


def text(name: str, description: str, utype: str | None = None, **more: Any) -> TapColumn:
    return TapColumn(name, "char", description, utype, **more)


def ident(name: str, description: str, utype: str | None = None, **more: Any) -> TapColumn:
    return TapColumn(name, "char", description, utype, ucd="meta.id", **more)


def timestamp(name: str, description: str, utype: str | None = None) -> TapColumn:
    return TapColumn(name, "char", description, utype, ucd="time.epoch", xtype="timestamp")


def number(name: str, datatype: str, description: str, **more: Any) -> TapColumn:
    return TapColumn(name, datatype, description, arraysize=None, **more)


@dataclass(frozen=True)
class Reader:
    """For whom and where a source is built."""

    namespace: str  # the URI of the prefix `opus:`
    base_url: str  # the server's public base URL (stored locations are relative to it)
    allowed: Allowed | None  # the provenance ids the reader may see (None: all)
    sqlite: bool


Source = Callable[[Reader], Select[Any]]


@dataclass(frozen=True)
class TapTable:
    schema: str
    name: str  # without the schema
    description: str
    columns: tuple[TapColumn, ...]
    source: Source | None = None  # None: built by the service (tap_schema, uploads)
    utype: str | None = None

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    def column(self, key: str) -> TapColumn | None:
        return next((c for c in self.columns if c.key == key.lower()), None)


@dataclass(frozen=True)
class ForeignKey:
    from_table: str  # qualified
    target_table: str
    columns: tuple[tuple[str, str], ...]  # (from column, target column)
    description: str

    @property
    def key_id(self) -> str:
        return f"{self.from_table}.{'_'.join(c for c, _ in self.columns)}"


# -- expressions the sources share ------------------------------------------------------------


def _uri(column: Any, reader: Reader) -> ColumnElement[Any]:
    """A stored qualified name `opus:x` as the URI it stands for on this server."""
    return case(
        (column.like("opus:%"), literal(reader.namespace, SqlString) + func.substr(column, 6)),
        else_=column,
    )


def _location(column: Any, reader: Reader) -> ColumnElement[Any]:
    """A location stored relative to the server (`/store/<id>`) made absolute."""
    return case(
        (column.like("/%"), literal(reader.base_url.rstrip("/"), SqlString) + column),
        else_=column,
    )


def _time(column: Any, reader: Reader) -> ColumnElement[Any]:
    """Times as ISO 8601: SQLite keeps them as text with a space, which would compare
    wrongly with the ISO literals users write."""
    if reader.sqlite:
        return func.replace(column, " ", "T")
    return column  # type: ignore[no-any-return]


def _visible(column: Any, reader: Reader) -> ColumnElement[bool]:
    return true() if reader.allowed is None else reader.allowed(column)


def _described(description: Any, reader: Reader) -> ColumnElement[bool]:
    """Whether an activity the reader may see has this activity description."""
    a = prov.activities.alias("described")
    return exists().where(a.c.description_id == description, _visible(a.c.id, reader))


def _role_raw(description: Any, kind: str, role: Any) -> ColumnElement[Any]:
    """The stored form of a role's id: `<description id>#<kind>_<role>`."""
    return description + literal(f"#{kind}_", SqlString) + role  # type: ignore[no-any-return]


RAW = "__q"  # the suffix of the hidden column holding an identifier as stored


def _id(raw: Any, key: str, reader: Reader) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
    """An identifier column as the URI shown, and beside it (`<key>__q`, not exposed) as
    stored: the translator compares the stored forms, which the indexes cover."""
    return _uri(raw, reader).label(key), raw.label(key + RAW)


# -- the provenance schema -----------------------------------------------------------------


def _entity(r: Reader) -> Select[Any]:
    e = prov.entities.c
    return select(
        *_id(e.id, "id", r),
        e.name.label("name"),
        _location(e.location, r).label("location"),
        _time(e.generated_at, r).label("generatedattime"),
        e.content_type.label("content_type"),
        e.size.label("content_size"),
        e.sha256.label("sha256"),
        e.kind.label("kind"),
    ).where(_visible(e.id, r))


def _activity(r: Reader) -> Select[Any]:
    a = prov.activities.c
    s = prov.activity_attributes.alias("scheduled")
    made_by = and_(s.c.activity_id == a.id, s.c.name == SCHEDULE_ATTRIBUTE)
    return (
        select(
            *_id(a.id, "id", r),
            a.name.label("name"),
            _time(a.start_time, r).label("starttime"),
            _time(a.end_time, r).label("endtime"),
            a.status.label("status"),
            a.comment.label("comment"),
            *_id(a.description_id, "activitydescription", r),
            *_id(a.context_id, "context", r),
            *_id(a.replaces, "replaces", r),
            s.c.value.label("schedule"),
        )
        .select_from(prov.activities.outerjoin(s, made_by))
        .where(_visible(a.id, r))
    )


def _agent(r: Reader) -> Select[Any]:
    g = prov.agents.c
    query = select(
        *_id(g.id, "id", r),
        g.name.label("name"),
        g.type.label("type"),
        g.email.label("email"),
        g.version.label("version"),
    )
    if r.allowed is not None:
        assoc = prov.associations.c
        query = query.where(exists().where(assoc.agent_id == g.id, _visible(assoc.activity_id, r)))
    return query


def _used(r: Reader) -> Select[Any]:
    u, a = prov.used.c, prov.activities.c
    return (
        select(
            *_id(u.activity_id, "activity", r),
            *_id(u.entity_id, "entity", r),
            u.role.label("role"),
            _time(u.time, r).label("attime"),
            *_id(_role_raw(a.description_id, "used", u.role), "usagedescription", r),
        )
        .join_from(prov.used, prov.activities, a.id == u.activity_id)
        .where(_visible(u.activity_id, r))
    )


def _generated(r: Reader) -> Select[Any]:
    g, a = prov.generations.c, prov.activities.c
    return (
        select(
            *_id(g.entity_id, "entity", r),
            *_id(g.activity_id, "activity", r),
            g.role.label("role"),
            _time(g.time, r).label("attime"),
            *_id(_role_raw(a.description_id, "generated", g.role), "generationdescription", r),
        )
        .join_from(prov.generations, prov.activities, a.id == g.activity_id)
        .where(_visible(g.activity_id, r))
    )


def _invalidated(r: Reader) -> Select[Any]:
    """An entity's invalidation, seen by whoever may see the entity."""
    i = prov.invalidations.c
    return select(
        *_id(i.entity_id, "entity", r),
        *_id(i.activity_id, "activity", r),
        _time(i.time, r).label("attime"),
    ).where(_visible(i.entity_id, r))


def _associated(r: Reader) -> Select[Any]:
    s = prov.associations.c
    return select(
        *_id(s.activity_id, "activity", r),
        *_id(s.agent_id, "agent", r),
        s.role.label("role"),
    ).where(_visible(s.activity_id, r))


def _attributed(r: Reader) -> Select[Any]:
    """A result is attributed to the owner of the job that generated it."""
    g, s = prov.generations.c, prov.associations.c
    return (
        select(
            *_id(g.entity_id, "entity", r),
            *_id(s.agent_id, "agent", r),
            s.role.label("role"),
        )
        .join_from(prov.generations, prov.associations, s.activity_id == g.activity_id)
        .where(s.role == "owner", _visible(g.activity_id, r))
    )


def _derived(r: Reader) -> Select[Any]:
    d = prov.derivations.c
    return select(
        *_id(d.generated_id, "generatedentity", r),
        *_id(d.used_id, "usedentity", r),
        *_id(d.activity_id, "activity", r),
    ).where(_visible(d.activity_id, r))


def _informed(r: Reader) -> Select[Any]:
    """An activity that used what another generated was informed by it (PROV infers the
    communication), and one recorded as informed by another (a schedule's run by the run
    before it) was too; seen by whoever may see both."""
    u, g, c = prov.used.c, prov.generations.c, prov.communications.c
    inferred = (
        select(
            *_id(u.activity_id, "informed", r),
            *_id(g.activity_id, "informant", r),
        )
        .join_from(prov.used, prov.generations, g.entity_id == u.entity_id)
        .where(_visible(u.activity_id, r), _visible(g.activity_id, r))
    )
    recorded = select(
        *_id(c.informed, "informed", r),
        *_id(c.informant, "informant", r),
    ).where(_visible(c.informed, r), _visible(c.informant, r))
    return select(union(inferred, recorded).subquery())


def _activity_description(r: Reader) -> Select[Any]:
    d = prov.activity_descriptions.c
    query = select(
        *_id(d.id, "id", r),
        d.name.label("name"),
        d.version.label("version"),
        d.type.label("type"),
        d.subtype.label("subtype"),
        d.doculink.label("doculink"),
        d.description.label("description"),
    )
    if r.allowed is not None:
        query = query.where(_described(d.id, r))
    return query


def _role_description(table: Any, kind: str) -> Source:
    def source(r: Reader) -> Select[Any]:
        d = table.c
        query = select(
            *_id(_role_raw(d.description_id, kind, d.role), "id", r),
            *_id(d.description_id, "activitydescription", r),
            d.role.label("role"),
            d.description.label("description"),
            d.multiplicity.label("multiplicity"),
            *_id(_role_raw(d.description_id, kind, d.role), "entitydescription", r),
        )
        if r.allowed is not None:
            query = query.where(_described(d.description_id, r))
        return query

    return source


def _entity_description(r: Reader) -> Select[Any]:
    """What an entity in a role of an activity description is: its content type."""
    parts = []
    for table, kind in (
        (prov.usage_descriptions, "used"),
        (prov.generation_descriptions, "generated"),
    ):
        d = table.c
        query = select(
            *_id(_role_raw(d.description_id, kind, d.role), "id", r),
            d.role.label("name"),
            d.description.label("description"),
            d.content_type.label("content_type"),
        )
        if r.allowed is not None:
            query = query.where(_described(d.description_id, r))
        parts.append(query)
    return select(union(*parts).subquery())


def _parameter_raw(activity: Any, name: Any) -> ColumnElement[Any]:
    return activity + literal("#param_", SqlString) + name  # type: ignore[no-any-return]


def _parameter(r: Reader) -> Select[Any]:
    p, a = prov.parameters.c, prov.activities.c
    return (
        select(
            *_id(_parameter_raw(p.activity_id, p.name), "id", r),
            *_id(p.activity_id, "activity", r),
            p.name.label("name"),
            p.value.label("paramvalue"),
            *_id(_role_raw(a.description_id, "param", p.name), "parameterdescription", r),
        )
        .join_from(prov.parameters, prov.activities, a.id == p.activity_id)
        .where(_visible(p.activity_id, r))
    )


def _parameter_description(r: Reader) -> Select[Any]:
    """One per parameter of an activity description, from what its activities recorded."""
    p, a = prov.parameters.c, prov.activities.c
    query = (
        select(
            *_id(_role_raw(a.description_id, "param", p.name), "id", r),
            *_id(a.description_id, "activitydescription", r),
            p.name.label("name"),
            func.max(p.datatype).label("datatype"),
            func.max(p.unit).label("unit"),
            func.max(p.ucd).label("ucd"),
            func.max(p.min).label("minvalue"),
            func.max(p.max).label("maxvalue"),
            func.max(p.options).label("options"),
            func.max(p.description).label("description"),
        )
        .join_from(prov.parameters, prov.activities, a.id == p.activity_id)
        .group_by(a.description_id, p.name)
    )
    if r.allowed is not None:
        query = query.where(_described(a.description_id, r))
    return query


def _configured(r: Reader) -> Select[Any]:
    p = prov.parameters.c
    return select(
        *_id(p.activity_id, "activity", r),
        *_id(_parameter_raw(p.activity_id, p.name), "artefact", r),
        literal("Parameter", SqlString).label("artefacttype"),
    ).where(_visible(p.activity_id, r))


def _context(r: Reader) -> Select[Any]:
    c = prov.contexts.c
    query = select(
        *_id(c.context_id, "id", r), c.key.label("context_key"), c.value.label("context_value")
    )
    if r.allowed is not None:
        seen = prov.activities.alias("seen")
        query = query.where(
            exists().where(seen.c.context_id == c.context_id, _visible(seen.c.id, r))
        )
    return query


def _v(name: str) -> str:
    return f"{VOPROV}{name}"


ROLE = "the role it played"


def _role_table(
    name: str, model: str, what: str, role_text: str, table: Any, kind: str
) -> TapTable:
    """A UsageDescription or GenerationDescription table (the two have the same shape)."""
    return TapTable(
        PROVENANCE,
        name,
        f"ProvDM {model}: {what}",
        (
            ident("id", f"URI of the {_kind_name(model)}", _v(f"{model}.id")),
            ident(
                "activityDescription",
                "its activity description",
                _v(f"{model}.ActivityDescription"),
            ),
            text("role", ROLE, _v(f"{model}.role")),
            text("description", role_text, _v(f"{model}.description")),
            text("multiplicity", "how many entities (a number or *)", _v(f"{model}.multiplicity")),
            ident("entityDescription", "what the entity is", _v(f"{model}.EntityDescription")),
        ),
        _role_description(table, kind),
        _v(model),
    )


def _kind_name(model: str) -> str:
    """UsageDescription -> usage description."""
    return model.removesuffix("Description").lower() + " description"


PROVENANCE_TABLES: tuple[TapTable, ...] = (
    TapTable(
        PROVENANCE,
        "entity",
        "ProvDM entities: every file a job used or generated",
        (
            ident("id", "URI of the entity (resolves to its bytes)", _v("Entity.id"), indexed=True),
            text("name", "file name", _v("Entity.name"), ucd="meta.id;meta.file"),
            text(
                "location", "where its bytes are (URL)", _v("Entity.location"), ucd="meta.ref.url"
            ),
            timestamp(
                "generatedAtTime", "when it was generated (results)", _v("Entity.generatedAtTime")
            ),
            text("content_type", "media type", _v("Entity.content_type"), ucd="meta.code.mime"),
            number("content_size", "long", "size in bytes", unit="byte", ucd="phys.size;meta.file"),
            text("sha256", "SHA-256 of the bytes, hex", ucd="meta.checksum"),
            text("kind", "result, upload or download", ucd="meta.code"),
        ),
        _entity,
        _v("Entity"),
    ),
    TapTable(
        PROVENANCE,
        "activity",
        "ProvDM activities: every job that ran",
        (
            ident(
                "id", "URI of the activity (resolves to its job)", _v("Activity.id"), indexed=True
            ),
            text("name", "name of the job (its definition, and its RUNID)", _v("Activity.name")),
            timestamp("startTime", "when it started", _v("Activity.startTime")),
            timestamp("endTime", "when it ended", _v("Activity.endTime")),
            text("status", "its final UWS phase", ucd="meta.code.status"),
            text("comment", "its error message, if any", _v("Activity.comment")),
            ident(
                "activityDescription", "its ActivityDescription", _v("Activity.ActivityDescription")
            ),
            ident("context", "its execution context (provenance.context)"),
            ident(
                "replaces",
                "the activity this one was run again in place of (an input was invalidated)",
                _v("Activity.replaces"),
            ),
            text(
                "schedule",
                "the schedule whose tick made this job (its opus:schedule), if one did",
                ucd="meta.id",
            ),
        ),
        _activity,
        _v("Activity"),
    ),
    TapTable(
        PROVENANCE,
        "agent",
        "ProvDM agents: owners, server and worker software, contacts",
        (
            ident("id", "URI of the agent", _v("Agent.id"), indexed=True),
            text("name", "name", _v("Agent.name")),
            text(
                "type", "Person, SoftwareAgent or Organization", _v("Agent.type"), ucd="meta.code"
            ),
            text("email", "e-mail address", _v("Agent.email"), ucd="meta.email"),
            text("version", "software version", ucd="meta.version"),
        ),
        _agent,
        _v("Agent"),
    ),
    TapTable(
        PROVENANCE,
        "used",
        "ProvDM Used: an activity used an entity in a role",
        (
            ident("activity", "the activity", _v("Used.activity"), indexed=True),
            ident("entity", "the entity used", _v("Used.entity"), indexed=True),
            text("role", ROLE, _v("Used.role")),
            timestamp("atTime", "when", _v("Used.time")),
            ident("usageDescription", "its UsageDescription", _v("Used.UsageDescription")),
        ),
        _used,
        _v("Used"),
    ),
    TapTable(
        PROVENANCE,
        "wasgeneratedby",
        "ProvDM WasGeneratedBy: an entity was generated by an activity in a role",
        (
            ident("entity", "the entity generated", _v("WasGeneratedBy.entity"), indexed=True),
            ident("activity", "the activity", _v("WasGeneratedBy.activity"), indexed=True),
            text("role", ROLE, _v("WasGeneratedBy.role")),
            timestamp("atTime", "when", _v("WasGeneratedBy.time")),
            ident(
                "generationDescription",
                "its GenerationDescription",
                _v("WasGeneratedBy.GenerationDescription"),
            ),
        ),
        _generated,
        _v("WasGeneratedBy"),
    ),
    TapTable(
        PROVENANCE,
        "wasinvalidatedby",
        "ProvDM WasInvalidatedBy: an entity found wrong, invalidated by an activity (its"
        " comment the reason, its agent who)",
        (
            ident("entity", "the entity invalidated", _v("WasInvalidatedBy.entity"), indexed=True),
            ident("activity", "the invalidation activity", _v("WasInvalidatedBy.activity")),
            timestamp("atTime", "when", _v("WasInvalidatedBy.time")),
        ),
        _invalidated,
        _v("WasInvalidatedBy"),
    ),
    TapTable(
        PROVENANCE,
        "wasassociatedwith",
        "ProvDM WasAssociatedWith: an agent was responsible for an activity",
        (
            ident("activity", "the activity", _v("WasAssociatedWith.activity"), indexed=True),
            ident("agent", "the agent", _v("WasAssociatedWith.agent")),
            text("role", "owner, server, worker or contact", _v("WasAssociatedWith.role")),
        ),
        _associated,
        _v("WasAssociatedWith"),
    ),
    TapTable(
        PROVENANCE,
        "wasattributedto",
        "ProvDM WasAttributedTo: a result is attributed to the owner of its job",
        (
            ident("entity", "the entity", _v("WasAttributedTo.entity")),
            ident("agent", "the agent", _v("WasAttributedTo.agent")),
            text("role", "owner", _v("WasAttributedTo.role")),
        ),
        _attributed,
        _v("WasAttributedTo"),
    ),
    TapTable(
        PROVENANCE,
        "wasderivedfrom",
        "ProvDM WasDerivedFrom: a result was derived from an input of its job",
        (
            ident("generatedEntity", "the entity derived", _v("WasDerivedFrom.generatedEntity")),
            ident("usedEntity", "the entity it was derived from", _v("WasDerivedFrom.usedEntity")),
            ident("activity", "the activity that did it", _v("WasDerivedFrom.activity")),
        ),
        _derived,
        _v("WasDerivedFrom"),
    ),
    TapTable(
        PROVENANCE,
        "wasinformedby",
        "ProvDM WasInformedBy: an activity used what another generated, or was recorded as"
        " informed by it (a schedule's run by the run before)",
        (
            ident("informed", "the later activity", _v("WasInformedBy.informed"), indexed=True),
            ident("informant", "the earlier activity", _v("WasInformedBy.informant")),
        ),
        _informed,
        _v("WasInformedBy"),
    ),
    TapTable(
        PROVENANCE,
        "activitydescription",
        "ProvDM ActivityDescription: the job definitions that ran",
        (
            ident("id", "URI of the description", _v("ActivityDescription.id")),
            text("name", "name of the job definition", _v("ActivityDescription.name")),
            text("version", "its version", _v("ActivityDescription.version"), ucd="meta.version"),
            text("type", "its type", _v("ActivityDescription.type"), ucd="meta.code"),
            text("subtype", "its subtype", _v("ActivityDescription.subtype"), ucd="meta.code"),
            text(
                "doculink",
                "its documentation",
                _v("ActivityDescription.docurl"),
                ucd="meta.ref.url",
            ),
            text("description", "what it does", _v("ActivityDescription.description")),
        ),
        _activity_description,
        _v("ActivityDescription"),
    ),
    _role_table(
        "usagedescription",
        "UsageDescription",
        "a role an activity description uses entities in",
        "what the entity is for",
        prov.usage_descriptions,
        "used",
    ),
    _role_table(
        "generationdescription",
        "GenerationDescription",
        "a role an activity description generates entities in",
        "what the entity is",
        prov.generation_descriptions,
        "generated",
    ),
    TapTable(
        PROVENANCE,
        "entitydescription",
        "ProvDM EntityDescription: what the entities of a usage or generation are",
        (
            ident("id", "URI of the entity description", _v("EntityDescription.id")),
            text("name", "the role's name", _v("EntityDescription.name")),
            text("description", "what such an entity is", _v("EntityDescription.description")),
            text(
                "content_type",
                "its media type",
                _v("DatasetDescription.content_type"),
                ucd="meta.code.mime",
            ),
        ),
        _entity_description,
        _v("EntityDescription"),
    ),
    TapTable(
        PROVENANCE,
        "parameter",
        "ProvDM Parameter: the value of each parameter of each activity",
        (
            ident("id", "URI of the parameter", _v("Parameter.id")),
            ident("activity", "the activity it configured", indexed=True),
            text("name", "the parameter's name", _v("Parameter.name")),
            text("paramValue", "its value (as text)", _v("Parameter.value")),
            ident(
                "parameterDescription",
                "its ParameterDescription",
                _v("Parameter.ParameterDescription"),
            ),
        ),
        _parameter,
        _v("Parameter"),
    ),
    TapTable(
        PROVENANCE,
        "parameterdescription",
        "ProvDM ParameterDescription: the parameters of each activity description",
        (
            ident("id", "URI of the parameter description", _v("ParameterDescription.id")),
            ident(
                "activityDescription",
                "its activity description",
                _v("ParameterDescription.ActivityDescription"),
            ),
            text("name", "the parameter's name", _v("ParameterDescription.name")),
            text("datatype", "its VOTable datatype", _v("ParameterDescription.datatype")),
            text("unit", "its unit", _v("ParameterDescription.unit"), ucd="meta.unit"),
            text("ucd", "its UCD", _v("ParameterDescription.ucd"), ucd="meta.ucd"),
            text("minValue", "its least value", _v("ParameterDescription.min")),
            text("maxValue", "its greatest value", _v("ParameterDescription.max")),
            text(
                "options",
                "the values it may take, comma-separated",
                _v("ParameterDescription.options"),
            ),
            text("description", "what it sets", _v("ParameterDescription.description")),
        ),
        _parameter_description,
        _v("ParameterDescription"),
    ),
    TapTable(
        PROVENANCE,
        "wasconfiguredby",
        "ProvDM WasConfiguredBy: an activity was configured by a parameter",
        (
            ident("activity", "the activity", _v("WasConfiguredBy.activity")),
            ident("artefact", "the parameter", _v("WasConfiguredBy.artefact")),
            text("artefactType", "Parameter", _v("WasConfiguredBy.artefactType"), ucd="meta.code"),
        ),
        _configured,
        _v("WasConfiguredBy"),
    ),
    TapTable(
        PROVENANCE,
        "context",
        "The execution context of activities: Python, platform, host, worker, package versions",
        (
            ident("id", "URI of the context (shared by activities with the same context)"),
            text("context_key", "what is described", ucd="meta.id"),
            text("context_value", "its value"),
        ),
        _context,
    ),
)

PROVENANCE_KEYS: tuple[ForeignKey, ...] = tuple(
    ForeignKey(f"{PROVENANCE}.{a}", f"{PROVENANCE}.{b}", ((ca, cb),), f"{a}.{ca} is a {b}")
    for a, ca, b, cb in (
        ("activity", "activityDescription", "activitydescription", "id"),
        ("activity", "context", "context", "id"),
        ("activity", "replaces", "activity", "id"),
        ("used", "activity", "activity", "id"),
        ("used", "entity", "entity", "id"),
        ("used", "usageDescription", "usagedescription", "id"),
        ("wasgeneratedby", "entity", "entity", "id"),
        ("wasgeneratedby", "activity", "activity", "id"),
        ("wasgeneratedby", "generationDescription", "generationdescription", "id"),
        ("wasinvalidatedby", "entity", "entity", "id"),
        ("wasinvalidatedby", "activity", "activity", "id"),
        ("wasassociatedwith", "activity", "activity", "id"),
        ("wasassociatedwith", "agent", "agent", "id"),
        ("wasattributedto", "entity", "entity", "id"),
        ("wasattributedto", "agent", "agent", "id"),
        ("wasderivedfrom", "generatedEntity", "entity", "id"),
        ("wasderivedfrom", "usedEntity", "entity", "id"),
        ("wasderivedfrom", "activity", "activity", "id"),
        ("wasinformedby", "informed", "activity", "id"),
        ("wasinformedby", "informant", "activity", "id"),
        ("usagedescription", "activityDescription", "activitydescription", "id"),
        ("usagedescription", "entityDescription", "entitydescription", "id"),
        ("generationdescription", "activityDescription", "activitydescription", "id"),
        ("generationdescription", "entityDescription", "entitydescription", "id"),
        ("parameter", "activity", "activity", "id"),
        ("parameter", "parameterDescription", "parameterdescription", "id"),
        ("parameterdescription", "activityDescription", "activitydescription", "id"),
        ("wasconfiguredby", "activity", "activity", "id"),
        ("wasconfiguredby", "artefact", "parameter", "id"),
    )
)

# -- tap_schema (TAP 1.1 section 4) ----------------------------------------------------------


def _std(name: str, datatype: str, description: str) -> TapColumn:
    if datatype == "char":
        return TapColumn(name, "char", description, std=True)
    return TapColumn(name, datatype, description, arraysize=None, std=True)


TAP_SCHEMA_TABLES: tuple[TapTable, ...] = (
    TapTable(
        TAP_SCHEMA,
        "schemas",
        "the schemas of this service",
        (
            _std("schema_name", "char", "schema name, as queries write it"),
            _std("utype", "char", "the data model of the schema"),
            _std("description", "char", "what the schema holds"),
            _std("schema_index", "int", "its place in listings"),
        ),
    ),
    TapTable(
        TAP_SCHEMA,
        "tables",
        "the tables of this service",
        (
            _std("schema_name", "char", "the schema of the table"),
            _std("table_name", "char", "table name, qualified by its schema"),
            _std("table_type", "char", "table or view"),
            _std("utype", "char", "the data model class of its rows"),
            _std("description", "char", "what the table holds"),
            _std("table_index", "int", "its place in listings"),
        ),
    ),
    TapTable(
        TAP_SCHEMA,
        "columns",
        "the columns of the tables of this service",
        (
            _std("table_name", "char", "the table of the column, qualified"),
            _std("column_name", "char", "column name"),
            _std("datatype", "char", "VOTable datatype"),
            _std("arraysize", "char", "VOTable arraysize"),
            _std("xtype", "char", "VOTable xtype"),
            _std('"size"', "int", "deprecated: the length of fixed-size arrays"),
            _std("description", "char", "what the column holds"),
            _std("utype", "char", "the data model attribute of the column"),
            _std("unit", "char", "VOUnit"),
            _std("ucd", "char", "UCD"),
            _std("indexed", "int", "1 when the column is indexed"),
            _std("principal", "int", "1 when the column is of first interest"),
            _std("std", "int", "1 when the column is defined by a standard"),
            _std("column_index", "int", "its place in the table"),
        ),
    ),
    TapTable(
        TAP_SCHEMA,
        "keys",
        "the foreign keys between the tables of this service",
        (
            _std("key_id", "char", "the key's id"),
            _std("from_table", "char", "the table holding the key, qualified"),
            _std("target_table", "char", "the table it refers to, qualified"),
            _std("description", "char", "what the key says"),
            _std("utype", "char", "the data model association"),
        ),
    ),
    TapTable(
        TAP_SCHEMA,
        "key_columns",
        "the columns of the foreign keys",
        (
            _std("key_id", "char", "the key's id"),
            _std("from_column", "char", "the column of the table holding the key"),
            _std("target_column", "char", "the column it refers to"),
        ),
    ),
)

TAP_SCHEMA_KEYS: tuple[ForeignKey, ...] = tuple(
    ForeignKey(f"{TAP_SCHEMA}.{a}", f"{TAP_SCHEMA}.{b}", ((ca, cb),), f"{a}.{ca} is one of {b}")
    for a, ca, b, cb in (
        ("tables", "schema_name", "schemas", "schema_name"),
        ("columns", "table_name", "tables", "table_name"),
        ("keys", "from_table", "tables", "table_name"),
        ("keys", "target_table", "tables", "table_name"),
        ("key_columns", "key_id", "keys", "key_id"),
    )
)

SCHEMAS: tuple[tuple[str, str, str | None], ...] = (
    (PROVENANCE, "IVOA Provenance Data Model (ProvDM 1.0) of every job of this server", PROVDM),
    (TAP_SCHEMA, "the tables and columns of this service (TAP 1.1)", None),
)
TABLES: tuple[TapTable, ...] = PROVENANCE_TABLES + TAP_SCHEMA_TABLES
KEYS: tuple[ForeignKey, ...] = PROVENANCE_KEYS + TAP_SCHEMA_KEYS
BY_NAME: dict[str, TapTable] = {t.qualified: t for t in TABLES}


def _flag(value: bool) -> int:
    return 1 if value else 0


@functools.cache  # the descriptions above do not change: built once, not per query
def tap_schema_rows() -> dict[str, list[tuple[Any, ...]]]:
    rows: dict[str, list[tuple[Any, ...]]] = {
        "schemas": [(n, u, d, i) for i, (n, d, u) in enumerate(SCHEMAS)],
        "tables": [
            (t.schema, t.qualified, "view" if t.source else "table", t.utype, t.description, i)
            for i, t in enumerate(TABLES)
        ],
        "columns": [
            (
                t.qualified,
                c.name,
                c.datatype,
                c.arraysize,
                c.xtype,
                None,
                c.description,
                c.utype,
                c.unit,
                c.ucd,
                _flag(c.indexed),
                _flag(c.principal),
                _flag(c.std),
                i,
            )
            for t in TABLES
            for i, c in enumerate(t.columns)
        ],
        "keys": [(k.key_id, k.from_table, k.target_table, k.description, None) for k in KEYS],
        "key_columns": [(k.key_id, f, t) for k in KEYS for f, t in k.columns],
    }
    return rows

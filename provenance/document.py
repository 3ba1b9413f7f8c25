"""Stored records -> a prov.model.ProvDocument, in the IVOA model or plain W3C PROV.

IVOA ProvDM classes PROV has no word for are PROV records typed with
``voprov:``: an ActivityDescription is an entity of type
voprov:ActivityDescription that the activity wasInfluencedBy (type
voprov:isDescribedBy); each Parameter (with its ParameterDescription) and the
execution context are entities the activity wasInfluencedBy (type
voprov:wasConfiguredBy). Every serialization stays readable by prov 3.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from prov.model import PROV_LABEL, PROV_ROLE, PROV_TYPE, PROV_VALUE, ProvDocument
from sqlalchemy import Connection, select

from provenance import store
from provenance.model import VOPROV
from provenance.query import Selection

Model = Literal["IVOA", "W3C"]
AGENT_TYPES = {
    "Person": "prov:Person",
    "SoftwareAgent": "prov:SoftwareAgent",
    "Organization": "prov:Organization",
}


def _attrs(**values: Any) -> dict[Any, Any]:
    return {k.replace("__", ":"): v for k, v in values.items() if v not in (None, "")}


def _rows(conn: Connection, table: Any, column: Any, ids: set[str]) -> list[Any]:
    if not ids:
        return []
    return list(conn.execute(select(table).where(column.in_(sorted(ids)))))


def build(
    conn: Connection, chosen: Selection, namespaces: Mapping[str, str], model: Model = "IVOA"
) -> ProvDocument:
    doc = ProvDocument()
    for prefix, uri in namespaces.items():
        doc.add_namespace(prefix, uri)
    voprov = doc.add_namespace("voprov", VOPROV)
    q = doc.valid_qualified_name

    activities = _rows(conn, store.activities, store.activities.c.id, chosen.activities)
    for row in activities:
        doc.activity(
            row.id,
            row.start_time,
            row.end_time,
            _attrs(prov__label=row.name, voprov__status=row.status, voprov__comment=row.comment),
        )
    for row in _rows(conn, store.entities, store.entities.c.id, chosen.entities):
        doc.entity(
            row.id,
            _attrs(
                prov__label=row.name,
                prov__location=row.location,
                voprov__content_type=row.content_type,
                voprov__content_size=row.size,
                voprov__sha256=row.sha256,
            ),
        )
    for row in _rows(conn, store.agents, store.agents.c.id, chosen.agents):
        doc.agent(
            row.id,
            {
                PROV_TYPE: q(AGENT_TYPES[row.type]),
                PROV_LABEL: row.name,
                **_attrs(voprov__email=row.email, voprov__version=row.version),
            },
        )

    both = chosen.activities
    for row in _rows(conn, store.used, store.used.c.activity_id, both):
        if row.entity_id in chosen.entities:
            doc.used(
                row.activity_id, row.entity_id, row.time, other_attributes={PROV_ROLE: row.role}
            )
    for row in _rows(conn, store.generations, store.generations.c.activity_id, both):
        if row.entity_id in chosen.entities:
            doc.wasGeneratedBy(
                row.entity_id,
                row.activity_id,
                row.time,
                other_attributes={PROV_ROLE: row.role} if row.role else None,
            )
    for row in _rows(conn, store.associations, store.associations.c.activity_id, both):
        if row.agent_id in chosen.agents:
            doc.wasAssociatedWith(
                row.activity_id, row.agent_id, other_attributes={PROV_ROLE: row.role}
            )
    for row in _rows(conn, store.derivations, store.derivations.c.generated_id, chosen.entities):
        if row.used_id in chosen.entities:
            doc.wasDerivedFrom(
                row.generated_id, row.used_id, row.activity_id if row.activity_id in both else None
            )
    if model == "IVOA":
        _ivoa_records(conn, doc, activities, voprov)
    return doc


def _ivoa_records(conn: Connection, doc: ProvDocument, activities: list[Any], voprov: Any) -> None:
    """Descriptions, parameters and context of the activities shown."""
    ids = {row.id for row in activities}
    descriptions = {row.description_id for row in activities if row.description_id}
    for row in _rows(
        conn, store.activity_descriptions, store.activity_descriptions.c.id, descriptions
    ):
        doc.entity(
            row.id,
            {
                PROV_TYPE: voprov["ActivityDescription"],
                **_attrs(
                    voprov__name=row.name,
                    voprov__version=row.version,
                    voprov__type=row.type,
                    voprov__subtype=row.subtype,
                    voprov__doculink=row.doculink,
                    voprov__description=row.description,
                ),
            },
        )
    for row in activities:
        if row.description_id:
            doc.influence(
                row.id, row.description_id, other_attributes={PROV_TYPE: voprov["isDescribedBy"]}
            )
    for row in _rows(conn, store.parameters, store.parameters.c.activity_id, ids):
        local = row.activity_id.partition(":")[2]
        prefix = row.activity_id.partition(":")[0]
        parameter_id = f"{prefix}:{local}_par_{row.name}"
        doc.entity(
            parameter_id,
            {
                PROV_TYPE: voprov["Parameter"],
                PROV_VALUE: row.value,
                **_attrs(
                    voprov__name=row.name,
                    voprov__datatype=row.datatype,
                    voprov__unit=row.unit,
                    voprov__ucd=row.ucd,
                    voprov__min=row.min,
                    voprov__max=row.max,
                    voprov__options=row.options,
                    voprov__description=row.description,
                ),
            },
        )
        doc.influence(
            row.activity_id,
            parameter_id,
            other_attributes={
                PROV_TYPE: voprov["wasConfiguredBy"],
                voprov["artefactType"]: "Parameter",
            },
        )
    context: dict[str, dict[str, str]] = {}
    for row in _rows(conn, store.contexts, store.contexts.c.activity_id, ids):
        context.setdefault(row.activity_id, {})[row.key] = row.value
    for activity_id, items in context.items():
        prefix, _, local = activity_id.partition(":")
        context_id = f"{prefix}:{local}_context"
        attributes: dict[Any, Any] = {PROV_TYPE: voprov["Context"]}
        for key, value in sorted(items.items()):
            attributes[voprov["context_" + "".join(c if c.isalnum() else "_" for c in key)]] = value
        doc.entity(context_id, attributes)
        doc.influence(
            activity_id,
            context_id,
            other_attributes={
                PROV_TYPE: voprov["wasConfiguredBy"],
                voprov["artefactType"]: "Context",
            },
        )

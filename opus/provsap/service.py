"""ProvSAP rules: parameters, identifiers, formats, where an `opus:` name resolves; the
walk and the document come from the provenance library.

Identifiers leave the server as URLs: the prefix `opus` stands for `<base>/prov/` and
every location kept relative to the server (`/store/<id>`) is written under `<base>`,
the public base URL (OPUS_PUBLIC_URL, else the one the request shows). The store keeps
what it recorded (`opus:…`, relative locations): the documents are made absolute as
they are built, so ids recorded before keep working, given in any of their forms."""

from __future__ import annotations

import gc
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import cast
from urllib.parse import quote

from sqlalchemy import Connection, select

from opus.auth import Caller, visible_entities, visible_jobs, visible_nodes
from opus.errors import NotFound, ParameterError, Unavailable
from opus.ids import (
    entity_qname,
    is_id,
    job_qname,
    namespace_uri,
    public_base,
    qualified_name,
)
from opus.jobdefs.params import whole_number
from opus.store import jobs as store
from opus.store.db import Database
from provenance import document, query
from provenance.document import Document
from provenance.serializers import FORMATS, FormatUnavailable, GraphTooLarge, serialize

DEFAULT_FORMAT = "PROV-JSON"


@dataclass(frozen=True)
class Request:
    ids: list[str]
    depth: int | None  # None: ALL
    direction: query.Direction
    model: document.Model
    agents: bool
    response_format: str


def _one(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = params.get(name, [])
    if len(values) > 1:
        raise ParameterError(name, "given more than once")
    return values[0].strip() if values else None


def parse(params: Mapping[str, Sequence[str]], default_depth: str = "1") -> Request:
    """ProvSAP parameters (names already upper-cased; unknown ones ignored)."""
    ids = [v.strip() for v in params.get("ID", []) if v.strip()]
    depth_text = (_one(params, "DEPTH") or default_depth).upper()
    if depth_text == "ALL":
        depth = None
    elif (number := whole_number(depth_text, 10_000)) is not None:
        depth = number
    else:
        raise ParameterError("DEPTH", f"{depth_text!r} is not a whole number (0 to 10000) or ALL")
    direction = (_one(params, "DIRECTION") or "BACK").upper()
    if direction not in ("BACK", "FORTH"):
        raise ParameterError("DIRECTION", f"{direction!r} is not BACK or FORTH")
    model = (_one(params, "MODEL") or "IVOA").upper()
    if model not in ("IVOA", "W3C"):
        raise ParameterError("MODEL", f"{model!r} is not IVOA or W3C")
    response_format = (_one(params, "RESPONSEFORMAT") or DEFAULT_FORMAT).upper()
    if response_format not in FORMATS:
        raise ParameterError(
            "RESPONSEFORMAT", f"{response_format!r} is not one of {', '.join(FORMATS)}"
        )
    # a drawing shows agents on demand: they would cross every other edge
    agent = (_one(params, "AGENT") or ("NO" if response_format == "PROV-SVG" else "YES")).upper()
    if agent not in ("YES", "NO", "TRUE", "FALSE"):
        raise ParameterError("AGENT", f"{agent!r} is not YES or NO")
    return Request(
        ids,
        depth,
        cast(query.Direction, direction),
        cast(document.Model, model),
        agent in ("YES", "TRUE"),
        response_format,
    )


class ProvenanceService:
    def __init__(self, db: Database, public_url: str = "") -> None:
        self.db = db
        self.public_url = public_url

    def base(self, request_base: str) -> str:
        """The public base URL: the setting, else what the request shows."""
        return public_base(self.public_url or request_base)

    def _resolve(
        self, ids: list[str], allowed: query.Allowed | None, base: str
    ) -> tuple[list[str], list[str]]:
        """The records the IDs name: qualified names (`opus:x`), their URIs (`<base>/prov/x`,
        or `urn:opus:x` of older documents) or bare job/entity ids. Activities, entities
        and agents to walk from; descriptions, contexts and parameters to show. One the
        caller may not see is unknown, as one that does not exist."""
        named = [_candidates(qualified_name(value, base)) for value in ids]
        candidates = [name for names in named for name in names]
        with self.db.read() as conn:
            known = query.known_ids(conn, candidates, allowed)
            others = [c for c in candidates if c not in known]
            artefacts = document.known_artefacts(conn, others, allowed) if others else set()
        unknown = [
            v for v, names in zip(ids, named, strict=True) if (known | artefacts).isdisjoint(names)
        ]
        if unknown:
            raise NotFound(f"no provenance record for ID {', '.join(map(repr, unknown))}")
        return [c for c in candidates if c in known], [c for c in candidates if c in artefacts]

    def document(self, caller: Caller, request: Request, request_base: str) -> tuple[bytes, str]:
        """The lineage asked for, walked as far as the caller may see."""
        if not request.ids:
            raise ParameterError("ID", "missing: give the id of an entity, activity or job")
        with gc_paused():
            return _serialize(self.lineage(caller, request, request_base), request.response_format)

    def lineage(self, caller: Caller, request: Request, request_base: str) -> Document:
        """The document of the lineage asked for, walked as far as the caller may see."""
        base = self.base(request_base)
        allowed = visible_nodes(caller)
        starts, artefacts = self._resolve(request.ids, allowed, base)
        with self.db.read() as conn:
            chosen = query.select_records(
                conn, starts, request.depth, request.direction, request.agents, allowed
            )
            return document.build(conn, chosen, namespaces(base), request.model, base, artefacts)

    def job_document(
        self, caller: Caller, job_id: str, request: Request, request_base: str
    ) -> tuple[bytes, str]:
        """A job's activity with what it used, generated and who ran it (one hop each way),
        and the activities it was informed by or informed that the caller may see (the
        caller may see the job: the route has checked)."""
        base = self.base(request_base)
        start = job_qname(job_id)
        with self.db.read() as conn:
            if not query.known_ids(conn, [start]):
                raise NotFound(f"job {job_id} has no provenance yet (it has not run)")
            chosen = query.activity_records(conn, start, request.agents, visible_nodes(caller))
            doc = document.build(conn, chosen, namespaces(base), request.model, base)
        return _serialize(doc, request.response_format)

    def locate(self, caller: Caller, local: str, request_base: str) -> str:
        """The URL that serves the record `opus:<local>` (what `<base>/prov/<local>`
        redirects to): a job's UWS resource, a stored entity's bytes, else its ProvSAP
        document. One the caller may not see is not found, as one that does not exist."""
        base = self.base(request_base)
        with self.db.read() as conn:
            path = _served_at(conn, caller, local)
        if path is not None:
            return base + path
        qname = f"opus:{local}"  # an agent, a description, a destroyed job...
        self._resolve([qname], visible_nodes(caller), base)
        return f"{base}/provsap?ID={quote(qname, safe=':')}&RESPONSEFORMAT=PROV-JSON"


def _served_at(conn: Connection, caller: Caller, local: str) -> str | None:
    """The path of the job (`job_<id>`) or stored entity (`ent_<id>`) the caller may see."""
    kind, _, key = local.partition("_")
    if not is_id(key):
        return None
    if kind == "job":
        jobs = store.jobs
        visible = select(jobs.c.jobdef).where(jobs.c.id == key, visible_jobs(caller))
        jobdef = conn.execute(visible).scalar()
        return None if jobdef is None else f"/rest/{quote(jobdef, safe='')}/{key}"
    if kind == "ent" and store.get_entity(conn, key, visible_entities(caller)) is not None:
        return f"/store/{key}"
    return None


def _candidates(name: str) -> list[str]:
    """The qualified names an id may be: a bare id is a job's or an entity's."""
    return [job_qname(name), entity_qname(name)] if is_id(name) else [name]


def namespaces(base: str) -> dict[str, str]:
    """The prefixes of a document served from `base`."""
    return {"opus": namespace_uri(base)}


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a large document is built: its many new
    objects would trigger full collections that cost a third of the time; reference
    counting still frees everything, and the collector runs again afterwards."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _serialize(doc: document.Document, response_format: str) -> tuple[bytes, str]:
    try:
        return serialize(doc, response_format)
    except GraphTooLarge as exc:
        raise ParameterError("DEPTH", str(exc)) from None
    except FormatUnavailable as exc:
        raise Unavailable(f"RESPONSEFORMAT={response_format}: {exc}") from None

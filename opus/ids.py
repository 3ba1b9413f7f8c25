"""Identifiers of jobs and entities: short, random, URL- and NCName-safe after a prefix,
and the qualified names they take in provenance (``opus:job_<id>``, ``opus:ent_<id>``)."""

from __future__ import annotations

import re
import secrets
from urllib.parse import quote

ID_PATTERN = re.compile(r"^[a-z0-9]{16}$")
NOT_NCNAME = re.compile(r"[^A-Za-z0-9_.-]+")
NAMESPACES = {"opus": "urn:opus:"}  # the prefix of every qualified name OPUS records
PROV_PATH = "/prov/"  # under the server's public base URL: where `opus:` names resolve


OLD_NAMESPACE = NAMESPACES["opus"]  # what `opus` stood for in documents written before
# What a base URL may hold as it is in every format (PROV-N's IRIs are the strictest):
# RFC 3986's reserved and unreserved characters and '%'; anything else is percent-encoded
URL_SAFE = ":/?#[]@!$&'()*+,;=-._~%"


def namespace_uri(base_url: str) -> str:
    """The URI the prefix `opus` stands for on the server at `base_url`: every qualified
    name `opus:<local>` is then the URL `<base_url>/prov/<local>`, which resolves."""
    return base_url.rstrip("/") + PROV_PATH


def public_base(url: str) -> str:
    """A base URL as documents carry it: no trailing slash, and percent-encoded where it
    holds what an IRI may not (a Host header is the client's to choose)."""
    return quote(url.strip().rstrip("/"), safe=URL_SAFE)


def qualified_name(given: str, base: str) -> str:
    """An id as a client gives it (a URI of this server's namespace, `urn:opus:` of older
    documents, or the qualified name) as the store keeps it."""
    for prefix in (namespace_uri(base), OLD_NAMESPACE):
        if given.startswith(prefix) and len(given) > len(prefix):
            return "opus:" + given[len(prefix) :]
    return given


def new_id() -> str:
    return secrets.token_hex(8)


def is_id(text: str) -> bool:
    return bool(ID_PATTERN.match(text))


def local_name(text: str) -> str:
    """Text made safe for the local part of a qualified name."""
    return NOT_NCNAME.sub("_", text).strip("_") or "x"


JOB_PREFIX = "opus:job_"
ENTITY_PREFIX = "opus:ent_"
INVALIDATION_PREFIX = "opus:inval_"  # the activity that invalidated an entity
# the attribute of a job's activity that names the schedule whose tick made the job
SCHEDULE_ATTRIBUTE = "opus:schedule"


def job_qname(job_id: str) -> str:
    return f"{JOB_PREFIX}{job_id}"


def entity_qname(entity_id: str) -> str:
    return f"{ENTITY_PREFIX}{entity_id}"


def invalidation_qname(invalidation_id: str) -> str:
    return f"{INVALIDATION_PREFIX}{invalidation_id}"


def user_qname(name: str | None) -> str:
    """The agent of a job's owner (None: anonymous; no user may take that name)."""
    return f"opus:user_{local_name(name or 'anonymous')}"

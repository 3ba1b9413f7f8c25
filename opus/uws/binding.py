"""Request binding: a request's fields and files made into the values a job stores.

Each field is matched to a parameter (checked against its definition) or to an input;
an input is an upload (its bytes stored as an entity now), the id or URL of a stored
entity of this server (the same entity, so that lineage crosses jobs), or an external
http(s) URL (downloaded by the runner). Defaults are recorded too: a job's stored values
are its full configuration.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from opus.auth import Caller, visible_entities
from opus.config import Settings
from opus.errors import NotFound, ParameterError, Unavailable
from opus.execution.fetch import FetchError, check_url
from opus.ids import entity_qname, is_id, new_id
from opus.jobdefs.model import JobDefinition, UsedDef
from opus.jobdefs.params import check_text, check_value
from opus.store import jobs as store
from opus.store.db import Database
from opus.store.files import safe_file_name, write_stream
from opus.store.objects import StoreUnavailable, object_key, storage_of

CONTROL = ("PHASE", "RUNID", "EXECUTIONDURATION", "DESTRUCTION", "SHARE")
MEDIA_TYPE = re.compile(r"[\w!#$&^.+-]+/[\w!#$&^.+-]+", re.ASCII)

# (caller, jobdef, job id, result id) -> the result's entity, or NotFound
FindResult = Callable[[Caller, str, str, str], store.EntityRecord]


@dataclass(frozen=True)
class Upload:
    """A file sent with a request: the parameter it is for and its bytes."""

    name: str
    file_name: str
    content_type: str
    stream: BinaryIO


@dataclass
class Changes:
    """Parameter values and inputs bound from one request, not yet stored."""

    caller: Caller  # who asks: a stored entity is referred to only if the caller may see it
    parameters: list[dict[str, object]] = field(default_factory=list)
    inputs: list[dict[str, object]] = field(default_factory=list)
    entities: list[store.EntityRecord] = field(default_factory=list)
    control: dict[str, str] = field(default_factory=dict)

    def given(self) -> set[str]:
        return {str(p["name"]) for p in self.parameters}

    def add_input(self, role: str, position: int, entity_id: str) -> None:
        self.parameters.append(
            dict(name=role, position=position, value=entity_qname(entity_id), by_reference=True)
        )
        self.inputs.append(dict(role=role, position=position, entity_id=entity_id))


def media_type(given: str, declared: str) -> str:
    """The client's type/subtype of an upload (served and recorded later), or the
    definition's when the client's is missing or not a media type."""
    kind = given.split(";", 1)[0].strip().lower()
    return kind if MEDIA_TYPE.fullmatch(kind) else declared


class Binder:
    def __init__(self, settings: Settings, db: Database, find_result: FindResult) -> None:
        self.settings = settings
        self.db = db
        self.find_result = find_result

    def bind(
        self,
        caller: Caller,
        jobdef: JobDefinition,
        job_id: str,
        fields: Sequence[tuple[str, str]],
        uploads: Sequence[Upload],
        base_url: str,
        creating: bool,
    ) -> Changes:
        """The request's values; uploads are stored already (`discard` removes them)."""
        changes = Changes(caller)
        try:
            positions: dict[str, int] = {}
            names = {p.name.lower(): p.name for p in jobdef.parameters}
            names |= {u.name.lower(): u.name for u in jobdef.used}
            for raw_name, value in fields:
                key = raw_name.upper()
                if creating and key in CONTROL:
                    if key in changes.control:
                        raise ParameterError(key, "given more than once")
                    check_text(key, value)
                    changes.control[key] = value
                    continue
                name = raw_name if raw_name in names.values() else names.get(raw_name.lower())
                if name is None:
                    raise ParameterError(raw_name, self._unknown(jobdef, creating))
                position = positions.get(name, 0)
                positions[name] = position + 1
                used = jobdef.used_entity(name)
                if used is None:
                    pdef = jobdef.parameter(name)
                    assert pdef is not None
                    if position:
                        raise ParameterError(name, "given more than once")
                    checked = check_value(pdef, value)
                    changes.parameters.append(
                        dict(name=name, position=0, value=checked, by_reference=False)
                    )
                else:
                    self._check_multiplicity(used, position)
                    check_text(name, value)
                    self._reference(used, value, position, changes, base_url)
            upload_roles = {u.name.lower(): u.name for u in jobdef.used}
            for upload in uploads:
                role = upload_roles.get(upload.name.lower())
                if role is None:
                    raise ParameterError(upload.name, "no input of this definition takes a file")
                used = jobdef.used_entity(role)
                assert used is not None
                position = positions.get(role, 0)
                positions[role] = position + 1
                self._check_multiplicity(used, position)
                changes.add_input(role, position, self._store_upload(job_id, used, upload, changes))
        except BaseException:
            self.discard(changes)
            raise
        return changes

    @staticmethod
    def _unknown(jobdef: JobDefinition, creating: bool) -> str:
        known = [p.name for p in jobdef.parameters] + [u.name for u in jobdef.used]
        extra = f" and {', '.join(CONTROL)}" if creating else ""
        return f"unknown parameter for {jobdef.name}; known: {', '.join(known) or 'none'}{extra}"

    @staticmethod
    def _check_multiplicity(used: UsedDef, position: int) -> None:
        if used.multiplicity != "*" and position >= used.multiplicity:
            raise ParameterError(used.name, f"takes at most {used.multiplicity} value(s)")

    def _reference(
        self, used: UsedDef, value: str, position: int, changes: Changes, base_url: str
    ) -> None:
        """An input given as a stored entity id, a URL of this server, another URL, or an id
        for the definition's URL template."""
        text = value.strip()
        template = used.url_template or ""
        if "://" not in text and template and not template.startswith("file://"):
            text = template.replace("${ID}", text).replace("$ID", text)
        entity_id = self._local_entity(changes.caller, used.name, text, base_url)
        if entity_id is not None:
            changes.add_input(used.name, position, entity_id)
            return
        if urlsplit(text).scheme.lower() not in ("http", "https"):
            raise ParameterError(
                used.name,
                f"{value!r} is not a stored entity id, nor an http(s) URL; upload a file instead",
            )
        try:  # refused now, not at download: where it leads, or a host that does not resolve
            check_url(text, self.settings.fetch_allowed)
        except FetchError as exc:
            raise ParameterError(used.name, str(exc)) from None
        changes.parameters.append(
            dict(name=used.name, position=position, value=text, by_reference=True)
        )

    def _local_entity(self, caller: Caller, name: str, text: str, base_url: str) -> str | None:
        """The id of the stored entity `text` names (an id, opus:ent_<id>, or a URL of this
        server's /store or results), if the caller may see it; None for anything else."""
        parts = urlsplit(text)
        base = urlsplit(base_url)
        candidate: str | None = None
        if parts.scheme in ("http", "https") and parts.netloc == base.netloc:
            path = unquote(parts.path).removeprefix(base.path.rstrip("/"))
            segments = path.strip("/").split("/")
            if len(segments) == 2 and segments[0] == "store":
                candidate = segments[1]
            elif len(segments) >= 5 and segments[0] == "rest" and segments[3] == "results":
                try:
                    return self.find_result(
                        caller, segments[1], segments[2], "/".join(segments[4:])
                    ).id
                except NotFound as exc:
                    raise ParameterError(name, exc.message) from None
            elif segments[0] in ("rest", "jdl"):
                raise ParameterError(name, f"{text} is not a file: give one of a job's results")
        elif not parts.scheme or parts.scheme == "opus":
            candidate = text.removeprefix("opus:").removeprefix("ent_")
            if not is_id(candidate):
                return None
        if candidate is None:
            return None
        with self.db.read() as conn:
            found = (
                store.get_entity(conn, candidate, visible_entities(caller))
                if is_id(candidate)
                else None
            )
        if found is None:
            raise ParameterError(name, f"no stored entity {candidate!r}")
        return found.id

    def _store_upload(self, job_id: str, used: UsedDef, upload: Upload, changes: Changes) -> str:
        entity_id = new_id()
        folder = self.settings.uploads_dir / job_id
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / entity_id
        sha256, size = write_stream(upload.stream, target)
        file_name = safe_file_name(upload.file_name) or used.name
        storage = storage_of(self.settings)
        try:
            key = storage.keep(target, object_key("uploads", entity_id, file_name))
        except StoreUnavailable as exc:
            raise Unavailable(f"{used.name}: the object store is unreachable ({exc})") from None
        finally:
            if storage.remote:  # the store holds it now (or nothing was stored)
                target.unlink()
        changes.entities.append(
            store.new_entity(
                id=entity_id,
                job_id=job_id,
                name=used.name,
                origin="upload",
                path=key,
                file_name=file_name,
                content_type=media_type(upload.content_type, used.content_type),
                size=size,
                sha256=sha256,
            )
        )
        return entity_id

    def discard(self, changes: Changes) -> None:
        """Remove the files of the uploads bound: their job was not stored."""
        with contextlib.suppress(OSError, StoreUnavailable):
            storage_of(self.settings).delete(e.path for e in changes.entities)

    def apply_defaults(self, jobdef: JobDefinition, changes: Changes, base_url: str) -> None:
        """Record every parameter's value, defaults included: the job's full configuration."""
        given = changes.given()
        for pdef in jobdef.parameters:
            if pdef.name not in given and pdef.default is not None:
                changes.parameters.append(
                    dict(name=pdef.name, position=0, value=pdef.default, by_reference=False)
                )
        for used in jobdef.used:
            if used.name in given or not used.default:
                continue
            # OPUS defaults may name a file of the old server ("input.txt"): such a default
            # cannot be resolved here, and the input must then be given.
            with contextlib.suppress(ParameterError):
                self._reference(used, used.default, 0, changes, base_url)

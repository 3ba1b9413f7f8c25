"""Reading ActivityDescription VOTables (OPUS ``*_vot.xml`` files load unchanged).

The layout, as OPUS writes it: one RESOURCE ``type="meta"
utype="voprov:ActivityDescription"`` holding a DESCRIPTION, top-level PARAMs
(type, subtype, version, doculink, contact_name, contact_email,
executionDuration, quote, and what runs: script, command, callable or service) and the
GROUPs InputParams (one PARAM per parameter, VALUES/MIN/MAX/OPTION for bounds
and choices, ``type="no_query"`` for optional ones), Used and Generated (one
sub-GROUP per entity, with PARAMs role, multiplicity, default, content_type,
url). Elements are matched by local name, so files with or without the
VOTable namespace read the same.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lxml import etree
from pydantic import ValidationError

from opus.errors import ParameterError
from opus.jobdefs.model import NO_ENVIRONMENT, JobDefinition, Kind
from opus.jobdefs.params import check_definition, parse_boolean

KINDS: dict[str, Kind] = {
    "boolean": "boolean",
    "unsignedbyte": "integer",
    "short": "integer",
    "int": "integer",
    "integer": "integer",
    "long": "integer",
    "float": "real",
    "double": "real",
    "char": "string",
    "unicodechar": "string",
    "string": "string",
    "anyuri": "string",
    "datetime": "datetime",
    "date": "datetime",
}


MAX_FILE_BYTES = 4 * 2**20  # a definition is a few KiB; its script at most 128 KiB


class JobDefError(Exception):
    """A definition file that cannot be served: the message names the file and the field."""

    def __init__(self, path: Path, field: str, reason: str) -> None:
        super().__init__(f"{path}: {field}: {reason}")
        self.path = path
        self.field = field
        self.reason = reason


def _local(element: Any) -> str:
    tag = element.tag
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _children(element: Any, name: str) -> list[Any]:
    return [child for child in element if _local(child) == name]


def _description(element: Any) -> str:
    found = _children(element, "DESCRIPTION")
    return " ".join((found[0].text or "").split()) if found else ""


def _kind(datatype: str, xtype: str) -> Kind:
    if xtype.lower() in ("timestamp", "datetime", "date"):
        return "datetime"
    key = datatype.lower().removeprefix("xs:")
    if key not in KINDS:
        raise ValueError(f"unknown datatype {datatype!r}")
    return KINDS[key]


def _parameter(param: Any) -> dict[str, Any]:
    datatype = param.get("datatype", "char")
    default = param.get("value")
    values = _children(param, "VALUES")
    bounds: dict[str, Any] = {"options": []}
    for box in values:
        for child in box:
            kind = _local(child)
            if kind in ("MIN", "MAX"):
                bounds[kind.lower()] = child.get("value")
            elif kind == "OPTION":
                bounds["options"].append(child.get("value", ""))
    has_default = default is not None and default != ""
    return dict(
        name=param.get("name", ""),
        kind=_kind(datatype, param.get("xtype", "")),
        datatype=datatype,
        default=default if has_default else None,
        required=not has_default and param.get("type") != "no_query",
        unit=param.get("unit"),
        ucd=param.get("ucd"),
        utype=param.get("utype"),
        description=_description(param),
        **bounds,
    )


def _group_params(group: Any) -> dict[str, str]:
    return {p.get("name", ""): p.get("value", "") for p in _children(group, "PARAM")}


def _multiplicity(text: str) -> int | str:
    text = text.strip()
    if text in ("", "1"):
        return 1
    if text in ("*", "n", "N"):
        return "*"
    if int(text) < 1:
        raise ValueError(f"multiplicity {text!r} is not a whole number from 1, nor *")
    return int(text)


def _used(group: Any) -> dict[str, Any]:
    fields = _group_params(group)
    links = _children(group, "LINK")
    url = fields.get("url") or (links[0].get("href", "") if links else "")
    return dict(
        name=group.get("name", ""),
        content_type=fields.get("content_type") or "application/octet-stream",
        multiplicity=_multiplicity(fields.get("multiplicity", "")),
        default=fields.get("default") or None,
        required=fields.get("required", "true").strip().lower() not in ("false", "0", "no"),
        url_template=url or None,
        description=_description(group),
    )


def _generated(group: Any) -> dict[str, Any]:
    fields = _group_params(group)
    name = group.get("name", "")
    return dict(
        name=name,
        content_type=fields.get("content_type") or "application/octet-stream",
        multiplicity=_multiplicity(fields.get("multiplicity", "")),
        file_name=fields.get("default") or name,
        description=_description(group),
    )


def _execution(top: dict[str, str]) -> dict[str, Any]:
    execution: dict[str, Any] = {}
    if top.get("script", "").strip():
        execution["script"] = top["script"].replace("\r\n", "\n")
    if top.get("command", "").strip():
        command = json.loads(top["command"])
        if not isinstance(command, list) or not all(isinstance(a, str) for a in command):
            raise ValueError("command must be a JSON array of strings")
        execution["command"] = command
    for kind in ("callable", "service"):
        if top.get(kind, "").strip():
            execution[kind] = top[kind].strip()
    if top.get("pipeline", "").strip():
        steps = json.loads(top["pipeline"])
        if not isinstance(steps, list):
            raise ValueError("pipeline must be a JSON array of steps")
        execution["pipeline"] = steps
    return execution


def _names(text: str) -> list[str]:
    """A comma-separated list of names (the groups PARAM)."""
    return [n.strip() for n in text.split(",") if n.strip()]


def _int_or_none(text: str | None) -> int | None:
    return int(text) if text not in (None, "") else None


def _flag(path: Path, name: str, top: dict[str, str]) -> bool:
    try:
        return parse_boolean(top.get(name) or "false")
    except ValueError as exc:
        raise JobDefError(path, name, f"{exc}: give a valid boolean") from None


def _read(path: Path) -> dict[str, Any]:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise JobDefError(
                path, "file", f"{size} bytes, over the {MAX_FILE_BYTES} a definition may have"
            )
        root = etree.parse(str(path), etree.XMLParser(resolve_entities=False, no_network=True))
    except (etree.XMLSyntaxError, OSError) as exc:
        raise JobDefError(path, "file", f"not readable XML: {exc}") from None
    if _local(root.getroot()) != "VOTABLE":
        raise JobDefError(
            path, "file", f"the root element is <{_local(root.getroot())}>, not <VOTABLE>"
        )
    resources = [
        r
        for r in root.getroot().iter()
        if _local(r) == "RESOURCE" and r.get("utype", "") == "voprov:ActivityDescription"
    ]
    if not resources:
        raise JobDefError(path, "RESOURCE", 'no RESOURCE utype="voprov:ActivityDescription"')
    resource = resources[0]
    top = {p.get("name", ""): p.get("value", "") for p in _children(resource, "PARAM")}
    groups = {g.get("name", ""): g for g in _children(resource, "GROUP")}
    links = _children(resource, "LINK")
    field = "PARAM"
    try:
        data: dict[str, Any] = dict(
            name=resource.get("name") or resource.get("ID") or "",
            description=_description(resource),
            version=top.get("version", ""),
            type=top.get("type", ""),
            subtype=top.get("subtype", ""),
            doculink=top.get("doculink") or (links[0].get("href", "") if links else ""),
            contact_name=top.get("contact_name", ""),
            contact_email=top.get("contact_email", ""),
            execution_duration=_int_or_none(
                top.get("executionDuration", top.get("executionduration"))
            )
            or 0,
            quote=_int_or_none(top.get("quote")),
            retry_on_worker_loss=_flag(path, "retryOnWorkerLoss", top),
            deterministic=_flag(path, "deterministic", top),
            chunk_role=top.get("chunkRole") or None,
            chunk_size=_int_or_none(top.get("chunkSize")) or 0,
            requires=_names(top.get("requires", "")),
            groups=_names(top.get("groups", "")),
            share=_names(top.get("share", "")),
            source=str(path),
        )
        field = "script/command/callable/pipeline"
        data["execution"] = _execution(top)
        field = "GROUP InputParams"
        data["parameters"] = [
            _parameter(p) for p in _children(groups.get("InputParams", []), "PARAM")
        ]
        field = "GROUP Used"
        data["used"] = [_used(g) for g in _children(groups.get("Used", []), "GROUP")]
        field = "GROUP Generated"
        data["generated"] = [_generated(g) for g in _children(groups.get("Generated", []), "GROUP")]
    except (ValueError, TypeError, RecursionError) as exc:
        raise JobDefError(path, field, str(exc)) from None
    return data


def load_votable(path: Path) -> JobDefinition:
    data = _read(path)
    try:
        service = bool(data.get("execution", {}).get("service"))
        jobdef = JobDefinition.model_validate(data, context=NO_ENVIRONMENT if service else None)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "definition"
        where = _name_location(data, error["loc"]) or where
        raise JobDefError(path, where, error["msg"]) from None
    for pdef in jobdef.parameters:
        try:
            check_definition(pdef)
        except ParameterError as exc:
            raise JobDefError(path, f"parameters {pdef.name!r}", exc.reason) from None
    return jobdef


def _name_location(data: dict[str, Any], loc: tuple[Any, ...]) -> str:
    """'parameters.2.name' -> 'parameter n: name' when the item has a name."""
    if len(loc) >= 2 and isinstance(loc[1], int) and loc[0] in data:
        items = data[loc[0]]
        if isinstance(items, list) and loc[1] < len(items):
            name = items[loc[1]].get("name") if isinstance(items[loc[1]], dict) else None
            rest = ".".join(str(p) for p in loc[2:])
            return f"{loc[0]} {name!r}" + (f": {rest}" if rest else "")
    return ""

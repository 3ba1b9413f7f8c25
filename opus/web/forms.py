"""A job definition as a submission form: the control each parameter and input needs,
with its label, unit, description, bounds and default (what the template renders)."""

from __future__ import annotations

from dataclasses import dataclass, field

from opus.jobdefs.model import RERUN, JobDefinition, ParameterDef, UsedDef

# a real without a declared step takes any value (the browser's default step is 1)
ANY_STEP = "any"


@dataclass(frozen=True)
class Field:
    name: str
    control: str  # number | select | checkbox | text | datetime | file
    label: str
    description: str = ""
    unit: str | None = None
    default: str = ""
    required: bool = False
    min: str | None = None
    max: str | None = None
    step: str | None = None
    options: list[str] = field(default_factory=list)
    multiple: bool = False  # a file input taking several files
    accept: str = ""
    choices: tuple[tuple[str, str], ...] = ()  # an input: (entity id, label) to pick from


@dataclass(frozen=True)
class Form:
    jobdef: JobDefinition
    required: list[Field]  # shown at once
    optional: list[Field]  # folded away (they have defaults)
    inputs: list[Field]


def _parameter(p: ParameterDef) -> Field:
    common = dict(
        name=p.name,
        label=p.name.replace("_", " "),
        description=p.description,
        unit=p.unit,
        default=p.default or "",
        required=p.required,
    )
    if p.options:
        return Field(control="select", options=list(p.options), **common)  # type: ignore[arg-type]
    if p.kind == "boolean":
        return Field(control="checkbox", **common)  # type: ignore[arg-type]
    if p.kind in ("integer", "real"):
        step = "1" if p.kind == "integer" else ANY_STEP
        return Field(control="number", min=p.min, max=p.max, step=step, **common)  # type: ignore[arg-type]
    if p.kind == "datetime":
        return Field(control="datetime", **common)  # type: ignore[arg-type]
    return Field(control="text", **common)  # type: ignore[arg-type]


def _input(u: UsedDef, choices: tuple[tuple[str, str], ...]) -> Field:
    return Field(
        name=u.name,
        control="file",
        label=u.name.replace("_", " "),
        description=u.description,
        required=u.required and not u.default,
        multiple=u.multiplicity != 1,
        accept="" if u.content_type == "application/octet-stream" else u.content_type,
        choices=choices,
    )


def form_of(jobdef: JobDefinition, choices: tuple[tuple[str, str], ...] = ()) -> Form:
    """The form of a definition; each input may also be one of `choices`, the user's
    earlier results."""
    fields = [_parameter(p) for p in jobdef.parameters]
    return Form(
        jobdef,
        [f for f in fields if f.required],
        [f for f in fields if not f.required and f.name != RERUN]
        + [f for f in fields if f.name == RERUN],
        [_input(u, choices) for u in jobdef.used],
    )

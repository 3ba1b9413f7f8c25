"""What a job definition (an IVOA ActivityDescription) declares, as pydantic models."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
GROUP_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
JOBDEF_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,127}$")

# Environment names a parameter must not take: the job's scripts see every
# parameter as an environment variable, and these would change how bash, the
# dynamic linker or Python behave (BASH_ENV, for one, is sourced by bash).
RESERVED_ENV = frozenset(
    {
        "PATH",
        "HOME",
        "IFS",
        "ENV",
        "BASH_ENV",
        "SHELLOPTS",
        "BASHOPTS",
        "CDPATH",
        "GLOBIGNORE",
        "PS1",
        "PS2",
        "PS3",
        "PS4",
        "PROMPT_COMMAND",
        "SHELL",
        "TMPDIR",
        "LANG",
        "LC_ALL",
        "PWD",
        "OLDPWD",
        "USER",
        "LOGNAME",
        "HOSTNAME",
        "TERM",
    }
)
# The parameter of a deterministic definition that asks for a run, not a reuse (the
# server's: a callable does not get it)
RERUN = "rerun"
# A script runs as `bash -c SCRIPT`: Linux takes at most 128 KiB in one argument.
MAX_SCRIPT_BYTES = 128 * 1024

RESERVED_ENV_PREFIXES = ("LD_", "BASH_", "PYTHON", "OPUS_", "LC_", "GCONV", "MALLOC")

Kind = Literal["string", "integer", "real", "boolean", "datetime"]


def check_env_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise ValueError(f"name {name!r} must be a letter or _ followed by letters, digits, _")
    return name


def check_not_reserved(name: str) -> None:
    if name.upper() in RESERVED_ENV or name.upper().startswith(RESERVED_ENV_PREFIXES):
        raise ValueError(f"name {name!r} is reserved (it would change the job's environment)")


# Validation context of a definition whose execution is a service: no process, no
# environment, so the names an environment reserves are free (TAP's LANG)
NO_ENVIRONMENT = {"environment": False}


class _EnvNamed(BaseModel):
    """Something a job's process sees as an environment variable of the same name."""

    name: str

    @field_validator("name")
    @classmethod
    def _env_safe(cls, value: str, info: ValidationInfo) -> str:
        check_env_name(value)
        if (info.context or {}).get("environment", True):
            check_not_reserved(value)
        return value


class ParameterDef(_EnvNamed):
    kind: Kind = "string"
    datatype: str = "char"  # as written in the definition, kept for the form and the JSON
    default: str | None = None
    required: bool = False
    unit: str | None = None
    ucd: str | None = None
    utype: str | None = None
    min: str | None = None
    max: str | None = None
    options: list[str] = Field(default_factory=list)
    description: str = ""


class UsedDef(_EnvNamed):
    """An input entity: given by upload, by URL, or by the id of a stored entity."""

    content_type: str = "application/octet-stream"
    multiplicity: int | Literal["*"] = 1
    default: str | None = None
    required: bool = True
    url_template: str | None = None  # builds the URL from a plain identifier: "...$ID..."
    description: str = ""


class GeneratedDef(_EnvNamed):
    """A result: a file name, or a glob pattern relative to the job's working directory."""

    content_type: str = "application/octet-stream"
    file_name: str
    multiplicity: int | Literal["*"] = 1
    description: str = ""

    @field_validator("file_name")
    @classmethod
    def _relative(cls, value: str) -> str:
        parts = value.replace("\\", "/").split("/")
        if value.startswith("/") or ".." in parts or not value.strip():
            raise ValueError(f"file name {value!r} must be relative, inside the job directory")
        return value

    @property
    def is_pattern(self) -> bool:
        return any(c in self.file_name for c in "*?[")


class Step(BaseModel):
    """One job of a pipeline: a definition, its values (`$name` takes the pipeline's own
    value of that parameter) and its inputs (`step.result`: a result of an earlier step,
    by its step's name and the result's role; `$role`: an input of the pipeline)."""

    name: str
    jobdef: str
    values: dict[str, str] = Field(default_factory=dict)
    inputs: dict[str, str] = Field(default_factory=dict)


class Execution(BaseModel):
    """What runs: exactly one of a bash script, an argv command, a Python callable (in the
    job's own process), or a service of the server (`module:function` called inside the
    runner with the job's context and the server's database: TAP queries)."""

    script: str | None = None
    command: list[str] | None = None
    callable: str | None = None
    service: str | None = None
    # jobs of other definitions run one after another as this job's children
    pipeline: list[Step] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Execution:
        kinds = ("script", "command", "callable", "service", "pipeline")
        given = [k for k in kinds if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                "exactly one of script, command, callable, service or pipeline must be given"
                f" (found {', '.join(given) or 'none'})"
            )
        script_bytes = len(self.script.encode()) if self.script else 0
        if script_bytes >= MAX_SCRIPT_BYTES:
            raise ValueError(
                f"script is {script_bytes} bytes, over the {MAX_SCRIPT_BYTES}"
                " bash takes as one argument: keep it in a file beside the definition"
                " and run that"
            )
        for kind in ("callable", "service"):
            target = getattr(self, kind)
            if target and not re.match(r"^[\w.]+:[\w.]+$", target):
                raise ValueError(f"{kind} {target!r} must read module:function")
        return self


class JobDefinition(BaseModel):
    name: str
    version: str = ""
    type: str = ""
    subtype: str = ""
    description: str = ""
    doculink: str = ""
    contact_name: str = ""
    contact_email: str = ""
    execution_duration: int = Field(default=0, ge=0)  # seconds; 0: the server maximum
    quote: int | None = Field(default=None, ge=0)  # expected duration, seconds
    # A job whose worker is lost mid-run runs once more (for jobs safe to run twice).
    retry_on_worker_loss: bool = False
    # Same values and same input checksums give the same results: a job reuses those of an
    # earlier one (unless its `rerun` is true) instead of running.
    deterministic: bool = False
    # Inputs in this role (multiplicity *) are split into chunks of `chunk_size`, each run
    # as a child job in parallel; the job completes when they have, their results merged.
    chunk_role: str | None = None
    chunk_size: int = Field(default=0, ge=0)
    # Python packages its callable imports (the definition is not served without them)
    requires: list[str] = Field(default_factory=list)
    # Only members of these groups may see and run it (empty: everyone).
    groups: list[str] = Field(default_factory=list)
    # The groups a job of it is shared with when its SHARE is not given.
    share: list[str] = Field(default_factory=list)
    parameters: list[ParameterDef] = Field(default_factory=list)
    used: list[UsedDef] = Field(default_factory=list)
    generated: list[GeneratedDef] = Field(default_factory=list)
    execution: Execution
    source: str = ""  # the file it was read from

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not JOBDEF_NAME_PATTERN.match(value):
            raise ValueError(f"job definition name {value!r} is not a safe URL path segment")
        return value

    @field_validator("groups", "share")
    @classmethod
    def _group_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not GROUP_NAME_PATTERN.match(name):
                raise ValueError(f"group name {name!r} is not letters, digits, _ . -")
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> JobDefinition:
        seen: set[str] = set()
        for name in (
            [p.name for p in self.parameters]
            + [u.name for u in self.used]
            + [g.name for g in self.generated]
        ):
            if name.lower() in seen:
                raise ValueError(f"name {name!r} is declared twice")
            seen.add(name.lower())
        if self.chunk_role is not None:
            used = self.used_entity(self.chunk_role)
            if used is None or used.multiplicity != "*" or self.chunk_size < 1:
                raise ValueError(
                    f"chunk_role {self.chunk_role!r} must name an input of multiplicity *"
                    " and chunk_size be 1 or more"
                )
        if self.deterministic and self.parameter(RERUN) is None:
            self.parameters.append(
                ParameterDef(
                    name=RERUN,
                    kind="boolean",
                    datatype="boolean",
                    default="false",
                    description="run again even where an identical earlier job's results"
                    " could be reused",
                )
            )
        return self

    def parameter(self, name: str) -> ParameterDef | None:
        return next((p for p in self.parameters if p.name == name), None)

    def used_entity(self, name: str) -> UsedDef | None:
        return next((u for u in self.used if u.name == name), None)

"""Runs a definition's service: a function of the server called inside the runner.

A service (the `service` of a definition's execution, `module:function`) gets the job's
context, the server's settings and database included, which a job's own process never
gets: it is for the server's own definitions (TAP queries). It writes its results into
the working directory as any job does, and returns the content type of each it wrote
(by role) when that differs from the declared one; it raises JobFailure to end the job
in ERROR with a message for the client.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opus.config import Settings
from opus.store.db import Database


@dataclass(frozen=True)
class ServiceJob:
    settings: Settings
    db: Database
    job_id: str
    owner: str | None
    values: dict[str, str]  # parameter values as stored (defaults included)
    inputs: dict[str, list[Path]]  # role -> the input files, in the working directory
    workdir: Path
    deadline: float  # time.monotonic() past which the job has run too long


Service = Callable[[ServiceJob], dict[str, str] | None]


def resolve(target: str) -> Service:
    module_name, _, attribute = target.partition(":")
    found: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        found = getattr(found, part)
    service: Service = found
    return service

"""Runs a job definition's Python callable in the job's own process.

Usage: python -m opus.execution.call CALL_JSON — the runner writes the file
with the callable ("module:function"), its keyword arguments (typed parameter
values, input file names, result file names) and the definition's folder,
which is put on sys.path so that a definition can ship its module beside it.
A callable that takes a `data_rights` keyword (or **kwargs) and has no parameter of
that name gets the data rights of the job's owner, a list of names.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
from typing import Any


def main(path: str) -> None:
    with open(path) as handle:
        spec = json.load(handle)
    if spec.get("path"):
        sys.path.insert(0, spec["path"])
    module_name, _, attribute = spec["callable"].partition(":")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    kwargs = dict(spec["kwargs"])
    if "data_rights" not in kwargs and _takes(target, "data_rights"):
        kwargs["data_rights"] = list(spec.get("data_rights", []))
    target(**kwargs)


def _takes(function: Any, name: str) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        (p.name == name and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
        or p.kind == p.VAR_KEYWORD
        for p in parameters
    )


if __name__ == "__main__":
    main(sys.argv[1])

"""Runs a job definition's Python callable in the job's own process.

Usage: python -m opus.execution.call CALL_JSON — the runner writes the file
with the callable ("module:function"), its keyword arguments (typed parameter
values, input file names, result file names), what the server gives (`server`:
data_rights, the owner's data rights; real_data, the folder of the shipped data;
staging_url, the staging database), where a unit writes its manifest, and the
definition's folder, which is put on
sys.path so that a definition can ship its module beside it. A server value is
passed only to a callable that declares a keyword of its name (or **kwargs) and has
no parameter of that name. An exception ends the process with its one-line message
(the job's error); its traceback is written beside the call file.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
import traceback
from pathlib import Path
from typing import Any

from opus.units import manifest


def main(path: str) -> None:
    with open(path) as handle:
        spec = json.load(handle)
    if spec.get("path"):
        sys.path.insert(0, spec["path"])
    module_name, _, attribute = spec["callable"].partition(":")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    if spec.get("manifest"):
        manifest.TARGET = Path(spec["manifest"])
    kwargs = dict(spec["kwargs"])
    for name, value in spec.get("server", {}).items():
        if name not in kwargs and _takes(target, name):
            kwargs[name] = value
    try:
        target(**kwargs)
    except Exception as exc:
        # The job's message is its error's, in one line (a ValueError names the parameter);
        # the traceback, with the server's paths, stays in the job's folder for operators.
        Path(path).with_name("traceback.txt").write_text(traceback.format_exc())
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)


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

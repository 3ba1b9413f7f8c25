"""Runs a job definition's Python callable in the job's own process.

Usage: python -m opus.execution.call CALL_JSON — the runner writes the file
with the callable ("module:function"), its keyword arguments (typed parameter
values, input file names, result file names) and the definition's folder,
which is put on sys.path so that a definition can ship its module beside it.
"""

from __future__ import annotations

import importlib
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
    target(**spec["kwargs"])


if __name__ == "__main__":
    main(sys.argv[1])

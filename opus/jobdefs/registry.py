"""The job definitions a server serves: every valid file of its definition folders.

An invalid file is reported (path, field, reason) and left out; the others are served.
So is one whose Python packages (`requires`) are not installed: the science definitions
without the `[science]` extra are not offered, rather than offered and failing.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path

from opus.jobdefs.model import JobDefinition
from opus.jobdefs.votable import JobDefError, load_votable

log = logging.getLogger(__name__)

SUFFIXES = ("_vot.xml", ".vot.xml", ".vot", ".xml")


@dataclass(frozen=True)
class Problem:
    """A definition file left out: which file, which field, why."""

    path: Path
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.field}: {self.reason}"


@dataclass
class Registry:
    definitions: dict[str, JobDefinition] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def get(self, name: str) -> JobDefinition | None:
        return self.definitions.get(name)

    def names(self) -> list[str]:
        return sorted(self.definitions)


def definition_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(SUFFIXES))


def load_registry(folders: list[Path]) -> Registry:
    """Later folders override earlier ones for a definition of the same name."""
    registry = Registry()
    for folder in folders:
        if not folder.is_dir():
            registry.problems.append(Problem(folder, "folder", "does not exist"))
            continue
        for path in definition_files(folder):
            try:
                jobdef = load_votable(path)
            except JobDefError as exc:
                registry.problems.append(Problem(path, exc.field, exc.reason))
                log.warning("job definition %s not served: %s", path, exc)
                continue
            missing = [m for m in jobdef.requires if importlib.util.find_spec(m) is None]
            if missing:
                reason = (
                    f"needs the Python packages {', '.join(missing)}:"
                    " pip install 'opus-uws[science]'"
                )
                registry.problems.append(Problem(path, "requires", reason))
                log.warning("job definition %s not served: %s", path, reason)
                continue
            registry.definitions[jobdef.name] = jobdef
    return registry

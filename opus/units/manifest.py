"""What a unit tells its job's provenance that the runner cannot see from outside.

The runner knows a job's declared inputs and results. A unit also reads reference
files that are not inputs (DL3 event lists and the response tables in them, a TiDES
selection file), knows which result came from which input (a state from its object's
datapoints, not from every alert of the job) and drops data on purpose (partnership
alerts without the right). It writes that down in a manifest, JSON in the file the
runner names (`TARGET`, set by `opus.execution.call`; `.opus-manifest.json` in the
current folder otherwise); the runner turns it into the job's provenance.

    manifest = Manifest()
    manifest.use(path, "dl3", content_type="application/fits", hdu="EVENTS")
    manifest.derive("states/ab12.json", ["datapoints/ZTF18abc.json"])
    manifest.count("dropped_partnership", 4, "programid 2 needs the ztf_partnership right")
    manifest.write()
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_NAME = ".opus-manifest.json"
TARGET: Path | None = None  # where `Manifest.write` writes, when told nothing


@dataclass(frozen=True)
class Used:
    """A file read that is not one of the job's inputs: where it is, its checksum, and
    (for one table of a multi-table FITS file) the HDU."""

    path: str  # relative to the real-data folder when inside it, else as given
    role: str
    sha256: str
    size: int
    content_type: str = "application/octet-stream"
    hdu: str | None = None


@dataclass(frozen=True)
class Count:
    value: int
    why: str = ""


@dataclass
class Manifest:
    root: Path | None = None  # the real-data folder: used paths are written relative to it
    used: list[Used] = field(default_factory=list)
    derivations: dict[str, list[str]] = field(default_factory=dict)
    counts: dict[str, Count] = field(default_factory=dict)
    context: dict[str, str] = field(default_factory=dict)

    def use(
        self,
        path: str | Path,
        role: str,
        *,
        content_type: str = "application/octet-stream",
        hdu: str | None = None,
    ) -> str:
        """Record a reference file read; returns the key that `derive` takes for it."""
        file = Path(path).resolve()
        key = str(file)
        if self.root is not None and file.is_relative_to(self.root.resolve()):
            key = file.relative_to(self.root.resolve()).as_posix()
        if not any(u.path == key and u.hdu == hdu for u in self.used):
            self.used.append(
                Used(key, role, sha256_of(file), file.stat().st_size, content_type, hdu)
            )
        return key

    def derive(self, result: str, sources: list[str]) -> None:
        """`result` (a result file name, relative to the job's folder) was made from
        `sources`: input file names of the job, or keys returned by `use`."""
        self.derivations.setdefault(result, [])
        for source in sources:
            if source not in self.derivations[result]:
                self.derivations[result].append(source)

    def count(self, name: str, value: int, why: str = "") -> None:
        self.counts[name] = Count(int(value), why)

    def to_json(self) -> dict[str, Any]:
        return {
            "used": [asdict(u) for u in self.used],
            "derivations": self.derivations,
            "counts": {k: asdict(v) for k, v in self.counts.items()},
            "context": self.context,
        }

    def write(self, path: str | Path | None = None) -> Path:
        target = Path(path or TARGET or DEFAULT_NAME)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(self.to_json(), indent=1, sort_keys=True))
        return target


def read(path: str | Path) -> Manifest:
    """A manifest written by `Manifest.write` (an empty one when there is no file)."""
    file = Path(path)
    if not file.is_file():
        return Manifest()
    data = json.loads(file.read_text())
    return Manifest(
        used=[Used(**u) for u in data.get("used", [])],
        derivations={str(k): [str(s) for s in v] for k, v in data.get("derivations", {}).items()},
        counts={str(k): Count(**v) for k, v in data.get("counts", {}).items()},
        context={str(k): str(v) for k, v in data.get("context", {}).items()},
    )


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def safe_under(root: Path, relative: str) -> Path:
    """`relative` inside `root`, or ValueError: a parameter never names a file outside."""
    target = (root / relative).resolve()
    if not target.is_relative_to(root.resolve()):
        raise ValueError(f"{relative!r} is outside the data folder")
    return target

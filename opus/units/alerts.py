"""T0 (add): ZTF Avro alerts into per-object datapoints, filtered and deduplicated.

An alert carries its detection (`candidate`) and up to 30 days of history
(`prv_candidates`: previous detections, which have a candid, and upper limits, which
have none). The same detection reappears in every later alert of its object, so
datapoints are deduplicated across all alerts before they are filtered: every count
below is of distinct datapoints, not of their copies.
"""

from __future__ import annotations

import io
import json
import math
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import fastavro

from opus.units.manifest import Manifest

BANDS = {1: "g", 2: "r", 3: "i"}
PARTNERSHIP = 2  # programid of ZTF partnership data
PARTNERSHIP_RIGHT = "ztf_partnership"
NEGATIVE = ("f", "0")  # isdiffpos of a negative subtraction (reference brighter)
AVRO_MAGIC = b"Obj\x01"
WHY = {
    "partnership": "programid 2 (ZTF partnership) needs the ztf_partnership right",
    "rb": "detections with real-bogus score rb below rb_min",
    "mag": "detections fainter than mag_max (magpsf > mag_max) or without magpsf",
    "negative": "negative subtractions (isdiffpos 'f' or '0') with drop_negative",
}

Record = dict[str, Any]


def band_of(fid: int) -> str:
    return BANDS.get(fid, f"fid{fid}")


def fill_pattern(pattern: str, stem: str, parameter: str) -> str:
    """The result file `stem` names in a pattern like "datapoints/*.json" (one "*", in
    its last part, below the job's folder): results are written where the server looks."""
    path = PurePosixPath(pattern)
    if (
        path.is_absolute()
        or ".." in path.parts
        or pattern.count("*") != 1
        or "*" not in path.name
        or any(c in pattern for c in "?[]\\")
    ):
        raise ValueError(f"{parameter}: {pattern!r} is not a pattern like 'folder/*.json'")
    return pattern.replace("*", stem)


def read_alerts(name: str) -> Iterator[tuple[str, Record]]:
    """(where, alert) for each alert of an Avro file or of the .avro members of a tar
    bundle (read in memory, never extracted); `where` is "file" or "bundle:member"."""
    with open(name, "rb") as handle:
        magic = handle.read(4)
    try:
        if magic == AVRO_MAGIC:
            with open(name, "rb") as handle:
                for record in fastavro.reader(handle):
                    yield name, dict(record)  # type: ignore[arg-type]
            return
        if not tarfile.is_tarfile(name):
            raise ValueError("neither an Avro file nor a tar bundle of them")
        with tarfile.open(name) as bundle:
            members = sorted(
                (m for m in bundle.getmembers() if m.isfile() and m.name.endswith(".avro")),
                key=lambda m: m.name,
            )
            for member in members:
                data = bundle.extractfile(member)
                assert data is not None  # a regular file
                for record in fastavro.reader(io.BytesIO(data.read())):
                    yield f"{name}:{member.name}", dict(record)  # type: ignore[arg-type]
    except (ValueError, EOFError, OSError, tarfile.TarError) as exc:
        raise ValueError(f"alerts: {name!r} cannot be read as ZTF alerts: {exc}") from exc


def detection(point: Record, where: str) -> Record:
    return {
        "id": int(point["candid"]),
        "jd": point["jd"],
        "fid": point["fid"],
        "band": band_of(point["fid"]),
        "magpsf": point.get("magpsf"),
        "sigmapsf": point.get("sigmapsf"),
        "ra": point.get("ra"),
        "dec": point.get("dec"),
        "rb": point.get("rb"),
        "programid": point.get("programid"),
        "isdiffpos": point.get("isdiffpos"),
        "alert": where,
    }


def upper_limit(point: Record) -> Record:
    return {
        "jd": point["jd"],
        "fid": point["fid"],
        "band": band_of(point["fid"]),
        "diffmaglim": point.get("diffmaglim"),
        "programid": point.get("programid"),
    }


def rejection(
    point: Record, rb_min: float, mag_max: float, drop_negative: bool, partnership: bool
) -> str | None:
    """The first reason a detection is dropped (in the order of WHY), or None."""
    if point["programid"] == PARTNERSHIP and not partnership:
        return "partnership"
    if point["rb"] is not None and point["rb"] < rb_min:
        return "rb"
    if point["magpsf"] is None or point["magpsf"] > mag_max:
        return "mag"
    if drop_negative and str(point["isdiffpos"]) in NEGATIVE:
        return "negative"
    return None


@dataclass
class Pool:
    """The distinct datapoints of a set of alerts, and where they came from."""

    alerts: int = 0
    detections: dict[int, tuple[str, Record, bool]] = field(default_factory=dict)
    limits: dict[tuple[str, float, int], Record] = field(default_factory=dict)
    sources: dict[str, list[str]] = field(default_factory=dict)  # objectId -> input files
    copies: dict[str, int] = field(default_factory=lambda: {"detections": 0, "upper_limits": 0})

    def add(self, name: str, where: str, alert: Record) -> None:
        """A detection once per candid (the copy of the alert whose candidate it is
        wins, else the first), an upper limit once per (objectId, jd, fid): one exposure
        gives an upper limit to every object of its field."""
        self.alerts += 1
        object_id = str(alert["objectId"])
        if name not in self.sources.setdefault(object_id, []):
            self.sources[object_id].append(name)
        points = [(alert["candidate"], True)]
        points += [(p, False) for p in alert.get("prv_candidates") or []]
        for point, is_candidate in points:
            if point.get("candid") is None:
                key = (object_id, point["jd"], point["fid"])
                if key in self.limits:
                    self.copies["upper_limits"] += 1
                else:
                    self.limits[key] = upper_limit(point)
                continue
            candid = int(point["candid"])
            seen = self.detections.get(candid)
            if seen is not None:
                self.copies["detections"] += 1
                if seen[2] or not is_candidate:
                    continue
            self.detections[candid] = (object_id, detection(point, where), is_candidate)


def t0_ingest_alerts(
    *,
    alerts: list[str],
    rb_min: float = 0.3,
    mag_max: float = 21.0,
    drop_negative: bool = True,
    datapoints: str = "datapoints/*.json",
    summary: str = "ingest.json",
    data_rights: list[str] | None = None,
) -> None:
    """Alerts into `datapoints/<objectId>.json` ({objectId, detections sorted by jd,
    upper_limits}) and `summary`, what was kept and dropped, and why.

    A detection is dropped for the first failing reason of: partnership data
    (programid 2) without the ztf_partnership right, rb < rb_min (a missing rb passes),
    magpsf > mag_max, negative subtraction when drop_negative. Upper limits are only
    subject to the partnership rule. An object left without a detection gets no file."""
    if not alerts:
        raise ValueError("alerts: no alert files given")
    if not (isinstance(rb_min, int | float) and 0.0 <= rb_min <= 1.0):
        raise ValueError(f"rb_min: {rb_min!r} is not a real-bogus score between 0 and 1")
    if not (isinstance(mag_max, int | float) and math.isfinite(mag_max)):
        raise ValueError(f"mag_max: {mag_max!r} is not a finite magnitude")
    fill_pattern(datapoints, "x", "datapoints")
    partnership = PARTNERSHIP_RIGHT in (data_rights or [])

    pool = Pool()
    for name in sorted(alerts):
        for where, alert in read_alerts(name):
            pool.add(name, where, alert)

    dropped = {"partnership": 0, "rb": 0, "mag": 0, "negative": 0}
    kept: dict[str, list[Record]] = {}
    for object_id, point, _ in pool.detections.values():
        reason = rejection(point, rb_min, mag_max, drop_negative, partnership)
        if reason is None:
            kept.setdefault(object_id, []).append(point)
        else:
            dropped[reason] += 1
    limits: dict[str, list[Record]] = {}
    dropped_limits = 0
    for (object_id, _, _), limit in pool.limits.items():
        if limit["programid"] == PARTNERSHIP and not partnership:
            dropped_limits += 1
        elif object_id in kept:
            limits.setdefault(object_id, []).append(limit)

    manifest = Manifest()
    for object_id in sorted(kept):
        result = fill_pattern(datapoints, object_id, "datapoints")
        document = {
            "objectId": object_id,
            "detections": sorted(kept[object_id], key=lambda p: (p["jd"], p["id"])),
            "upper_limits": sorted(limits.get(object_id, []), key=lambda p: (p["jd"], p["fid"])),
        }
        Path(result).parent.mkdir(parents=True, exist_ok=True)
        Path(result).write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
        manifest.derive(result, pool.sources[object_id])

    without = sorted(set(pool.sources) - set(kept))
    n_detections = sum(len(points) for points in kept.values())
    n_limits = sum(len(points) for points in limits.values())
    report = {
        "alerts": pool.alerts,
        "objects": len(kept),
        "objects_without_detections": without,
        "detections": n_detections,
        "upper_limits": n_limits,
        "dropped": {**dropped, "partnership": dropped["partnership"] + dropped_limits},
        "dropped_detections": dropped,
        "dropped_upper_limits": {"partnership": dropped_limits},
        "duplicate_copies": pool.copies,
        "parameters": {
            "rb_min": rb_min,
            "mag_max": mag_max,
            "drop_negative": drop_negative,
            "ztf_partnership_right": partnership,
        },
    }
    Path(summary).parent.mkdir(parents=True, exist_ok=True)
    Path(summary).write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    manifest.derive(summary, sorted(alerts))

    manifest.count("alerts", pool.alerts)
    manifest.count("objects", len(kept))
    manifest.count("detections", n_detections, "distinct detections kept")
    manifest.count("upper_limits", n_limits, "distinct upper limits of the objects kept")
    manifest.count(
        "dropped_partnership", dropped["partnership"] + dropped_limits, WHY["partnership"]
    )
    for reason in ("rb", "mag", "negative"):
        manifest.count(f"dropped_{reason}", dropped[reason], WHY[reason])
    manifest.count(
        "objects_without_detections", len(without), "all detections dropped: no datapoints file"
    )
    manifest.write()

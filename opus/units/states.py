"""T1 (combine): an object's datapoints into one immutable, content-addressed state.

A state is the object's light curve at the time of its latest detection: every kept
detection and upper limit of the object, from all the datapoints files of it given
(two ingests of different nights combine). Its id is the hash of what it combines, so
the same detections give the same id and the same file, byte for byte, in any job.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

from opus.units.alerts import fill_pattern
from opus.units.manifest import Manifest

Record = dict[str, Any]


def state_id(datapoint_ids: list[int]) -> str:
    """The whole sha256 hex digest of the compact JSON of the sorted detection candids,
    e.g. sha256(b"[595147624915010001,595160600415010004]"). Upper limits have no
    candid and do not enter the id (AMPEL keys a ZTF state on its photopoints)."""
    text = json.dumps(sorted(int(i) for i in datapoint_ids), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def read_datapoints(name: str) -> Record:
    try:
        document = json.loads(Path(name).read_text())
        if not isinstance(document, dict):
            raise TypeError("not a JSON object")
        if not isinstance(document["objectId"], str):
            raise TypeError("objectId is not a string")
        for key in ("detections", "upper_limits"):
            if not isinstance(document.get(key, []), list):
                raise TypeError(f"{key} is not a list")
        for point in document.get("detections", []):
            int(point["id"]), float(point["jd"])
        return document
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"datapoints: {name!r} is not a datapoints file: {exc}") from exc


def combine(documents: list[Record]) -> Record:
    """One object's datapoints documents merged: a detection once per candid and an
    upper limit once per (jd, fid), the first in file-name order winning."""
    detections: dict[int, Record] = {}
    limits: dict[tuple[float, int], Record] = {}
    for document in documents:
        for point in document.get("detections", []):
            detections.setdefault(int(point["id"]), point)
        for limit in document.get("upper_limits", []):
            limits.setdefault((float(limit["jd"]), int(limit["fid"])), limit)
    ids = sorted(detections)
    return {
        "id": state_id(ids),
        "objectId": documents[0]["objectId"],
        "datapoint_ids": ids,
        "detections": sorted(detections.values(), key=lambda p: (p["jd"], p["id"])),
        "upper_limits": sorted(limits.values(), key=lambda p: (p["jd"], p["fid"])),
        "jd_last": max(p["jd"] for p in detections.values()),
    }


def state_bytes(state: Record) -> bytes:
    """The canonical file of a state: sorted keys, so equal states are equal bytes."""
    return (json.dumps(state, indent=1, sort_keys=True) + "\n").encode()


def t1_combine_states(
    *, datapoints: list[str], states: str = "states/*.json", index: str = "states.csv"
) -> None:
    """`states/<id>.json` for each object with a detection ({id, objectId,
    datapoint_ids, detections, upper_limits, jd_last}: jd_last is the jd of the latest
    detection), and `index` (CSV: id, objectId, n_detections, jd_last) sorted by
    objectId."""
    if not datapoints:
        raise ValueError("datapoints: no datapoints files given")
    fill_pattern(states, "x", "states")
    by_object: dict[str, list[tuple[str, Record]]] = {}
    for name in sorted(datapoints):
        document = read_datapoints(name)
        by_object.setdefault(document["objectId"], []).append((name, document))

    manifest = Manifest()
    rows: list[list[Any]] = []
    empty = 0
    for object_id in sorted(by_object):
        names = [name for name, _ in by_object[object_id]]
        documents = [document for _, document in by_object[object_id]]
        if not any(d.get("detections") for d in documents):
            empty += 1
            continue
        state = combine(documents)
        result = fill_pattern(states, state["id"], "states")
        Path(result).parent.mkdir(parents=True, exist_ok=True)
        Path(result).write_bytes(state_bytes(state))
        manifest.derive(result, names)
        rows.append([state["id"], object_id, len(state["detections"]), state["jd_last"]])

    Path(index).parent.mkdir(parents=True, exist_ok=True)
    with open(index, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "objectId", "n_detections", "jd_last"])
        writer.writerows(rows)
    manifest.derive(index, sorted(datapoints))
    manifest.count("states", len(rows))
    manifest.count("objects_without_detections", empty, "no detection: no state")
    manifest.write()

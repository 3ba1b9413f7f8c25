"""T3 (react): the states a TiDES selection function accepts, as a target list (CSV and
VOTable) and upserted into a staging table a spectroscopic follow-up reads.

The selection function (tidesSelectionFunctions.yml) is read as: a detection is
significant when it is positive (not a negative subtraction), in one of `filters` and
its S/N (1.0857 / sigmapsf) is at least `significance`. A state is selected when its
significant detections span at least `minBands` distinct bands and `minNights`
distinct nights (UT dates, floor(jd - 0.5)), and the brightest of them has
magpsf <= `magLimit`.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
import yaml  # type: ignore[import-untyped, unused-ignore]
from astropy.io.votable.tree import (  # type: ignore[import-untyped]
    Field,
    Resource,
    TableElement,
    VOTableFile,
)
from sqlalchemy.dialects import postgresql, sqlite

from opus.units.lightcurve import night, positive, read_state, significance
from opus.units.manifest import Manifest, safe_under

Record = dict[str, Any]
TABLE = "tides_stage"
INSERTS: dict[str, Callable[[sa.Table], Any]] = {
    "postgresql": postgresql.insert,  # both have INSERT ... ON CONFLICT DO UPDATE ... WHERE
    "sqlite": sqlite.insert,
}
VALUES = ("state_id", "ra", "dec", "peak_mag", "n_bands", "n_nights", "selection")
# name, VOTable datatype, unit, UCD
COLUMNS = [
    ("objectId", "char", None, "meta.id;meta.main"),
    ("state_id", "char", None, "meta.id"),
    ("ra", "double", "deg", "pos.eq.ra;meta.main"),
    ("dec", "double", "deg", "pos.eq.dec;meta.main"),
    ("peak_mag", "double", "mag", "phot.mag;stat.max"),
    ("peak_band", "char", None, "instr.bandpass"),
    ("n_bands", "int", None, "meta.number;instr.bandpass"),
    ("n_nights", "int", None, "meta.number;time.epoch"),
    ("max_significance", "double", None, "stat.snr;stat.max"),
    ("jd_last", "double", "d", "time.epoch"),
]


@dataclass(frozen=True)
class Selection:
    name: str
    filters: frozenset[str]
    significance: float
    min_bands: int
    min_nights: int
    mag_limit: float


def load_selection(path: Path, name: str) -> Selection:
    """The selection `name` of the YAML file; ValueError naming the known ones."""
    try:
        functions = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"selection_file: cannot read {path.name}: {exc}") from exc
    if not isinstance(functions, dict):
        raise ValueError(f"selection_file: {path.name} is not a mapping of selections")
    if name not in functions:
        known = ", ".join(sorted(str(k) for k in functions))
        raise ValueError(f"selection: unknown {name!r}; known: {known}")
    entry = functions[name]
    try:
        return Selection(
            name,
            frozenset(str(f) for f in entry["filters"]),
            float(entry["significance"]),
            int(entry["minBands"]),
            int(entry["minNights"]),
            float(entry["magLimit"]),
        )
    except (TypeError, KeyError, ValueError) as exc:
        raise ValueError(f"selection: {name!r} lacks or has a bad {exc}") from exc


def mean_position(points: list[Record]) -> Record:
    """The mean ra (of the directions, right across ra 0) and dec of the detections."""
    if not points:
        return {"ra": None, "dec": None}
    ra = np.radians([p["ra"] for p in points])
    mean_ra = np.degrees(np.arctan2(np.sin(ra).mean(), np.cos(ra).mean())) % 360.0
    return {"ra": float(mean_ra), "dec": float(np.mean([p["dec"] for p in points]))}


def evaluate(state: Record, selection: Selection) -> tuple[Record, list[str]]:
    """The target row of a state and the criteria it fails (none: selected)."""
    detections = state["detections"]
    significant = [
        p
        for p in detections
        if positive(p)
        and p.get("band") in selection.filters
        and p.get("magpsf") is not None
        and (significance(p) or 0.0) >= selection.significance
    ]
    bands = {p["band"] for p in significant}
    nights = {night(p["jd"]) for p in significant}
    peak = min(significant, key=lambda p: (p["magpsf"], p["jd"])) if significant else None
    row = {
        "objectId": state["objectId"],
        "state_id": state["id"],
        **mean_position(detections),
        "peak_mag": peak["magpsf"] if peak else None,
        "peak_band": peak["band"] if peak else None,
        "n_bands": len(bands),
        "n_nights": len(nights),
        "max_significance": max((significance(p) or 0.0 for p in significant), default=None),
        "jd_last": state["jd_last"],
    }
    failed = []
    if len(bands) < selection.min_bands:
        failed.append("minBands")
    if len(nights) < selection.min_nights:
        failed.append("minNights")
    if peak is None or peak["magpsf"] > selection.mag_limit:
        failed.append("magLimit")
    return row, failed


def write_targets(rows: list[Record], csv_name: str, vot_name: str, selection: Selection) -> None:
    for name in (csv_name, vot_name):
        Path(name).parent.mkdir(parents=True, exist_ok=True)
    with open(csv_name, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([c[0] for c in COLUMNS])
        writer.writerows([row[c[0]] for c in COLUMNS] for row in rows)
    votable = VOTableFile()
    resource = Resource()
    votable.resources.append(resource)
    table = TableElement(votable, name="targets")
    table.description = (
        f"TiDES selection {selection.name}: significant (S/N >= {selection.significance:g}) "
        f"positive detections in {', '.join(sorted(selection.filters))} over >= "
        f"{selection.min_bands} bands and >= {selection.min_nights} nights, brightest "
        f"<= {selection.mag_limit:g} mag"
    )
    resource.tables.append(table)
    for name, datatype, unit, ucd in COLUMNS:
        size = {"arraysize": "*"} if datatype == "char" else {}
        table.fields.append(
            Field(votable, name=name, datatype=datatype, unit=unit, ucd=ucd, **size)
        )
    table.create_arrays(len(rows))
    for i, row in enumerate(rows):
        table.array[i] = tuple(row[c[0]] for c in COLUMNS)
    votable.to_xml(vot_name, tabledata_format="tabledata")


def stage_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        TABLE,
        metadata,
        sa.Column("object_id", sa.String(64), primary_key=True),
        sa.Column("state_id", sa.String(64), nullable=False),
        sa.Column("ra", sa.Float, nullable=False),
        sa.Column("dec", sa.Float, nullable=False),
        sa.Column("peak_mag", sa.Float, nullable=False),
        sa.Column("n_bands", sa.Integer, nullable=False),
        sa.Column("n_nights", sa.Integer, nullable=False),
        sa.Column("selection", sa.String(128), nullable=False),
        sa.Column("first_staged", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
    )


def stage(url: str, rows: list[Record], selection: str) -> dict[str, int]:
    """Upsert the targets into `tides_stage`, keyed on object_id, in one transaction:
    a row is written only when new or when its state or values changed, so a rerun
    changes nothing (not even `updated`). Returns counts inserted/updated/unchanged."""
    try:
        engine = sa.create_engine(url)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise ValueError(f"staging_url: not a usable database URL: {exc}") from exc
    insert = INSERTS.get(engine.dialect.name)
    if insert is None:
        engine.dispose()
        raise ValueError(
            f"staging_url: {engine.dialect.name} is not supported (sqlite, postgresql)"
        )
    table = stage_table(sa.MetaData())
    counts = {"inserted": 0, "updated": 0, "unchanged": 0}
    now = datetime.now(UTC)
    try:
        with engine.begin() as connection:
            table.create(connection, checkfirst=True)
            ids = [row["objectId"] for row in rows]
            existing = set(
                connection.scalars(sa.select(table.c.object_id).where(table.c.object_id.in_(ids)))
            )
            for row in rows:
                values = {key: row[key] for key in VALUES if key != "selection"}
                values["selection"] = selection
                statement = insert(table).values(
                    object_id=row["objectId"], first_staged=now, updated=now, **values
                )
                changed = sa.or_(
                    *(table.c[k].is_distinct_from(statement.excluded[k]) for k in VALUES)
                )
                statement = statement.on_conflict_do_update(
                    index_elements=[table.c.object_id],
                    set_={**{k: statement.excluded[k] for k in VALUES}, "updated": now},
                    where=changed,
                )
                # RETURNING says whether the row was written (rowcount is -1 on psycopg)
                written = connection.execute(statement.returning(table.c.object_id)).all()
                if row["objectId"] not in existing:
                    counts["inserted"] += 1
                else:
                    counts["updated" if written else "unchanged"] += 1
    finally:
        engine.dispose()
    return counts


def recency(row: Record) -> tuple[float, str]:
    return (row["jd_last"], row["state_id"])


def t3_select_export(
    *,
    states: list[str],
    selection: str = "tidesSNZTFSelect",
    selection_file: str = "tides/tidesSelectionFunctions.yml",
    targets_csv: str = "targets.csv",
    targets_vot: str = "targets.vot",
    real_data: str = "",
    staging_url: str = "",
) -> None:
    """The selected states as a target list (CSV and VOTable: objectId, state_id, ra,
    dec (mean of the detections), peak_mag and peak_band (brightest significant
    detection), n_bands, n_nights, max_significance, jd_last), one row per object (its
    selected state of the latest jd_last) sorted by objectId, and upserted into the
    staging table when `staging_url` is given."""
    if not real_data:
        raise ValueError("real_data: no real-data folder to read selection_file from")
    if not states:
        raise ValueError("states: no state files given")
    root = Path(real_data)
    path = safe_under(root, selection_file)
    if not path.is_file():
        raise ValueError(f"selection_file: {selection_file!r} is not a file of the data folder")
    chosen = load_selection(path, selection)
    manifest = Manifest(root=root)
    key = manifest.use(path, "selection_function", content_type="application/yaml")

    latest: dict[str, tuple[str, Record]] = {}  # objectId -> its latest selected state
    failures = {"minBands": 0, "minNights": 0, "magLimit": 0}
    n_selected = 0
    for name in sorted(states):
        row, failed = evaluate(read_state(name), chosen)
        for criterion in failed:
            failures[criterion] += 1
        if failed:
            continue
        n_selected += 1
        seen = latest.get(row["objectId"])
        if seen is None or recency(row) > recency(seen[1]):
            latest[row["objectId"]] = (name, row)
    selected = [latest[object_id] for object_id in sorted(latest)]
    rows = [row for _, row in selected]
    write_targets(rows, targets_csv, targets_vot, chosen)
    for result in (targets_csv, targets_vot):
        manifest.derive(result, [name for name, _ in selected] + [key])

    why = ", ".join(f"{n} {c}" for c, n in failures.items() if n) or "none"
    manifest.count("selected", n_selected, f"states {chosen.name} accepts")
    manifest.count(
        "rejected", len(states) - n_selected, f"failing (a state may fail several): {why}"
    )
    manifest.count(
        "superseded", n_selected - len(rows), "selected, but an object's later state is the target"
    )
    if staging_url:
        for outcome, n in stage(staging_url, rows, chosen.name).items():
            manifest.count(f"staged_{outcome}", n, f"rows of {TABLE}")
        manifest.context["staging_table"] = TABLE
    else:
        manifest.count("staging_skipped", len(rows), "no staging_url: targets not staged")
    manifest.write()

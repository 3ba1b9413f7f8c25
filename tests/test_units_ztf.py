"""The ZTF units (T0 ingest, T1 states, T2 features and Bazin fits, T3 TiDES selection)
on the real sample alerts, run as the server runs them: in the job's folder, the inputs
copied in, the manifest where `manifest.TARGET` says (as opus.execution.call sets it).
Expected numbers are computed here from the Avro files with fastavro, never copied from
a unit's output."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import shutil
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
import pytest
import sqlalchemy as sa
import yaml  # type: ignore[import-untyped, unused-ignore]
from astropy.io.votable import parse_single_table  # type: ignore[import-untyped]

from opus.units import manifest as manifest_module
from opus.units.alerts import t0_ingest_alerts
from opus.units.lightcurve import t2_bazin_fit, t2_lightcurve_features
from opus.units.selection import t3_select_export
from opus.units.states import t1_combine_states
from tests.servers import require_shared

pytestmark = pytest.mark.any_database  # the units run in a folder, without the server

Alert = dict[str, Any]
BUNDLE = "ztf_public_20180819_mod1000.tar.gz"
PARTNER = "ZTF18abxhyqv.tar.gz"
LONG = "ZTF20abyfpze.avro"
BAND = {1: "g", 2: "r", 3: "i"}


# --- the data, read here independently of the units ---------------------------------


@pytest.fixture
def ztf() -> Path:
    return require_shared("data") / "ztf-alerts"


def sample_files(ztf: Path) -> list[Path]:
    """Every sample alert file: the bundles, the five 2018-06-01 alerts, the long one
    and the single alert beside the schema."""
    return [
        ztf / BUNDLE,
        ztf / PARTNER,
        ztf / LONG,
        *sorted((ztf / "ztf_public_20180601").glob("*.avro")),
        *sorted((ztf / "ztf-avro-alert").glob("*.avro")),
    ]


def alerts_of(path: Path) -> Iterator[Alert]:
    if path.name.endswith(".tar.gz"):
        with tarfile.open(path) as bundle:
            for member in bundle.getmembers():
                if member.isfile() and member.name.endswith(".avro"):
                    data = bundle.extractfile(member)
                    assert data is not None
                    yield from (dict(a) for a in fastavro.reader(io.BytesIO(data.read())))  # type: ignore[arg-type]
    else:
        with open(path, "rb") as handle:
            yield from (dict(a) for a in fastavro.reader(handle))  # type: ignore[arg-type]


def raw_points(
    paths: list[Path],
) -> tuple[list[Alert], list[tuple[str, Alert]], list[tuple[str, Alert]]]:
    """(alerts, every (objectId, detection) copy, every (objectId, upper limit) copy)."""
    alerts = [a for path in paths for a in alerts_of(path)]
    detections: list[tuple[str, Alert]] = []
    limits: list[tuple[str, Alert]] = []
    for alert in alerts:
        for point in [alert["candidate"], *(alert.get("prv_candidates") or [])]:
            target = detections if point.get("candid") is not None else limits
            target.append((alert["objectId"], point))
    return alerts, detections, limits


def unique_detections(paths: list[Path]) -> dict[int, tuple[str, Alert]]:
    return {int(p["candid"]): (o, p) for o, p in raw_points(paths)[1]}


def unique_limits(paths: list[Path]) -> dict[tuple[str, float, int], Alert]:
    return {(o, p["jd"], p["fid"]): p for o, p in raw_points(paths)[2]}


def passes(
    point: Alert,
    rb_min: float = 0.3,
    mag_max: float = 21.0,
    drop_negative: bool = True,
    partnership: bool = False,
) -> bool:
    return (
        (point["programid"] != 2 or partnership)
        and (point.get("rb") is None or point["rb"] >= rb_min)
        and point["magpsf"] is not None
        and point["magpsf"] <= mag_max
        and not (drop_negative and point["isdiffpos"] in ("f", "0"))
    )


def kept_by_object(paths: list[Path], **cuts: Any) -> dict[str, dict[int, Alert]]:
    kept: dict[str, dict[int, Alert]] = {}
    for candid, (object_id, point) in unique_detections(paths).items():
        if passes(point, **cuts):
            kept.setdefault(object_id, {})[candid] = point
    return kept


# --- running a unit as the server does ----------------------------------------------


@pytest.fixture
def job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., dict[str, Any]]:
    """Run a unit in tmp_path/job as its cwd; returns the manifest it wrote (JSON)."""
    folder = tmp_path / "job"
    folder.mkdir()
    monkeypatch.chdir(folder)
    runs = iter(range(1000))

    def run(unit: Callable[..., None], **kwargs: Any) -> dict[str, Any]:
        target = tmp_path / f"manifest-{next(runs)}.json"
        monkeypatch.setattr(manifest_module, "TARGET", target)
        unit(**kwargs)
        manifest: dict[str, Any] = json.loads(target.read_text())
        return manifest

    return run


def copy_in(*paths: Path) -> list[str]:
    """The inputs copied into the job's folder, as the server stages them: file names."""
    for path in paths:
        shutil.copy(path, path.name)
    return [path.name for path in paths]


def count(manifest: dict[str, Any], name: str) -> int:
    value: int = manifest["counts"][name]["value"]
    return value


def read_csv(name: str) -> list[dict[str, str]]:
    with open(name, newline="") as handle:
        return list(csv.DictReader(handle))


def datapoints_files() -> list[str]:
    return sorted(p.as_posix() for p in Path("datapoints").glob("*.json"))


def state_files() -> list[str]:
    return sorted(p.as_posix() for p in Path("states").glob("*.json"))


# --- T0 -----------------------------------------------------------------------------


def test_partnership_is_dropped_without_the_right_and_counted(
    ztf: Path, job: Callable[..., dict[str, Any]]
) -> None:
    alerts, _, _ = raw_points([ztf / PARTNER])
    assert sum(a["candidate"]["programid"] == 2 for a in alerts) == len(alerts) == 4
    partner = sum(p["programid"] == 2 for _, p in unique_detections([ztf / PARTNER]).values())
    partner += sum(p["programid"] == 2 for p in unique_limits([ztf / PARTNER]).values())
    public = kept_by_object([ztf / PARTNER])

    manifest = job(t0_ingest_alerts, alerts=copy_in(ztf / PARTNER))

    assert count(manifest, "dropped_partnership") == partner > 0
    assert "ztf_partnership" in manifest["counts"]["dropped_partnership"]["why"]
    assert count(manifest, "alerts") == 4
    assert (Path("datapoints/ZTF18abxhyqv.json").exists()) == bool(public)
    summary = json.loads(Path("ingest.json").read_text())
    assert summary["dropped"]["partnership"] == partner
    assert summary["parameters"]["ztf_partnership_right"] is False


def test_partnership_is_kept_with_the_right(ztf: Path, job: Callable[..., dict[str, Any]]) -> None:
    kept = kept_by_object([ztf / PARTNER], partnership=True)["ZTF18abxhyqv"]
    limits = unique_limits([ztf / PARTNER])

    manifest = job(t0_ingest_alerts, alerts=copy_in(ztf / PARTNER), data_rights=["ztf_partnership"])

    assert count(manifest, "dropped_partnership") == 0
    document = json.loads(Path("datapoints/ZTF18abxhyqv.json").read_text())
    assert {d["id"] for d in document["detections"]} == set(kept)
    assert any(d["programid"] == 2 for d in document["detections"])
    assert len(document["upper_limits"]) == len(limits)
    assert manifest["derivations"]["datapoints/ZTF18abxhyqv.json"] == [PARTNER]


def test_dedupe_across_the_alerts_of_one_object(
    ztf: Path, job: Callable[..., dict[str, Any]]
) -> None:
    _, copies, limit_copies = raw_points([ztf / PARTNER])
    unique = unique_detections([ztf / PARTNER])
    assert len(copies) > len(unique)  # the same detections come again in later alerts

    job(
        t0_ingest_alerts, alerts=copy_in(ztf / PARTNER), data_rights=["ztf_partnership"], rb_min=0.0
    )

    document = json.loads(Path("datapoints/ZTF18abxhyqv.json").read_text())
    ids = [d["id"] for d in document["detections"]]
    assert (
        len(ids)
        == len(set(ids))
        == sum(passes(p, rb_min=0.0, partnership=True) for _, p in unique.values())
    )
    keys = [(u["jd"], u["fid"]) for u in document["upper_limits"]]
    assert len(keys) == len(set(keys)) == len(unique_limits([ztf / PARTNER])) < len(limit_copies)
    summary = json.loads(Path("ingest.json").read_text())
    assert summary["duplicate_copies"]["detections"] == len(copies) - len(unique)
    # a candidate's own copy says which alert it came from
    candidates = {a["candid"] for a in alerts_of(ztf / PARTNER)}
    for point in document["detections"]:
        if point["id"] in candidates:
            assert point["alert"] == f"{PARTNER}:{point['id']}.avro"


@pytest.mark.parametrize(
    "cuts",
    [
        {},
        {"rb_min": 0.6},
        {"mag_max": 18.0},
        {"drop_negative": False},
        {"rb_min": 0.0, "mag_max": 30.0, "drop_negative": False},
    ],
)
def test_filters_upper_limits_apart(
    ztf: Path, job: Callable[..., dict[str, Any]], cuts: dict[str, Any]
) -> None:
    files = [ztf / BUNDLE, *sorted((ztf / "ztf_public_20180601").glob("*.avro"))]
    kept = kept_by_object(files, **cuts)
    unique = unique_detections(files)
    options = {"rb_min": 0.3, "mag_max": 21.0, "drop_negative": True, **cuts}
    # a dropped detection counts under its first failing cut, in the order rb, mag, negative
    low_rb = [p for _, p in unique.values() if p["rb"] is not None and p["rb"] < options["rb_min"]]
    rest = [p for _, p in unique.values() if p not in low_rb]
    faint = [p for p in rest if p["magpsf"] > options["mag_max"]]
    negative = [p for p in rest if p not in faint and p["isdiffpos"] in ("f", "0")]
    limits = unique_limits(files)
    n_alerts = len(raw_points(files)[0])

    manifest = job(t0_ingest_alerts, alerts=copy_in(*files), **cuts)

    assert datapoints_files() == sorted(f"datapoints/{o}.json" for o in kept)
    for object_id, expected in kept.items():
        document = json.loads(Path(f"datapoints/{object_id}.json").read_text())
        assert document["objectId"] == object_id
        detections = document["detections"]
        assert {d["id"] for d in detections} == set(expected)
        assert [d["jd"] for d in detections] == sorted(d["jd"] for d in detections)
        for d in detections:
            assert d["band"] == BAND[d["fid"]]
            assert d["magpsf"] == expected[d["id"]]["magpsf"]
            assert d["rb"] >= options["rb_min"] and d["magpsf"] <= options["mag_max"]
        own = {(k[1], k[2]) for k in limits if k[0] == object_id}
        assert {(u["jd"], u["fid"]) for u in document["upper_limits"]} == own
        assert all("diffmaglim" in u and "magpsf" not in u for u in document["upper_limits"])
    assert count(manifest, "dropped_rb") == len(low_rb)
    assert count(manifest, "dropped_mag") == len(faint)
    assert count(manifest, "dropped_negative") == (len(negative) if options["drop_negative"] else 0)
    assert count(manifest, "dropped_partnership") == 0
    assert count(manifest, "detections") == sum(len(k) for k in kept.values())
    assert count(manifest, "upper_limits") == sum(1 for k in limits if k[0] in kept)
    assert count(manifest, "alerts") == n_alerts == 35
    dropped = sum(count(manifest, f"dropped_{r}") for r in ("partnership", "rb", "mag", "negative"))
    assert dropped == len(unique) - sum(len(k) for k in kept.values())


def test_derivations_name_the_inputs_of_each_object(
    ztf: Path, job: Callable[..., dict[str, Any]]
) -> None:
    files = [ztf / LONG, *sorted((ztf / "ztf_public_20180601").glob("*.avro"))]
    sources: dict[str, list[str]] = {}
    for path in files:
        for alert in alerts_of(path):
            sources.setdefault(alert["objectId"], []).append(path.name)

    manifest = job(t0_ingest_alerts, alerts=copy_in(*files))

    for name in datapoints_files():
        object_id = Path(name).stem
        assert sorted(manifest["derivations"][name]) == sorted(sources[object_id])
    assert sorted(manifest["derivations"]["ingest.json"]) == sorted(p.name for p in files)


def test_bad_parameters_and_inputs(ztf: Path, job: Callable[..., dict[str, Any]]) -> None:
    names = copy_in(ztf / LONG)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"rb_min": 1.5}, "rb_min"),
        ({"mag_max": math.nan}, "mag_max"),
        ({"datapoints": "../elsewhere/*.json"}, "datapoints"),
        ({"datapoints": "datapoints/fixed.json"}, "datapoints"),
        ({"alerts": []}, "alerts"),
    ]
    for bad, word in cases:
        with pytest.raises(ValueError, match=word):
            job(t0_ingest_alerts, **{"alerts": names, **bad})
    Path("junk.avro").write_bytes(b"not an alert")
    with pytest.raises(ValueError, match=r"alerts: 'junk.avro'"):
        job(t0_ingest_alerts, alerts=["junk.avro"])
    with pytest.raises(ValueError, match="datapoints"):
        job(t1_combine_states, datapoints=["junk.avro"])
    with pytest.raises(ValueError, match="states"):
        job(t2_lightcurve_features, states=["junk.avro"])
    with pytest.raises(ValueError, match="band"):
        job(t2_bazin_fit, states=["junk.avro"], band="u")


# --- T1 -----------------------------------------------------------------------------


def test_state_id_is_the_hash_of_the_datapoints_and_stable(
    ztf: Path, job: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    kept = kept_by_object([ztf / LONG])["ZTF20abyfpze"]
    expected = hashlib.sha256(json.dumps(sorted(kept), separators=(",", ":")).encode()).hexdigest()
    job(t0_ingest_alerts, alerts=copy_in(ztf / LONG))

    manifest = job(t1_combine_states, datapoints=datapoints_files())
    assert state_files() == [f"states/{expected}.json"]
    first = Path(f"states/{expected}.json").read_bytes()
    state = json.loads(first)
    assert state["id"] == expected and state["datapoint_ids"] == sorted(kept)
    assert state["jd_last"] == max(p["jd"] for p in kept.values())
    assert manifest["derivations"][f"states/{expected}.json"] == ["datapoints/ZTF20abyfpze.json"]
    assert read_csv("states.csv") == [
        {
            "id": expected,
            "objectId": "ZTF20abyfpze",
            "n_detections": str(len(kept)),
            "jd_last": repr(state["jd_last"]),
        }
    ]

    # the same datapoints, in another job: the same id and the same bytes
    shutil.rmtree("states")
    job(t1_combine_states, datapoints=datapoints_files())
    assert Path(f"states/{expected}.json").read_bytes() == first

    # one detection less: another state
    document = json.loads(Path("datapoints/ZTF20abyfpze.json").read_text())
    document["detections"] = document["detections"][:-1]
    Path("fewer").mkdir()
    Path("fewer/ZTF20abyfpze.json").write_text(json.dumps(document))
    shutil.rmtree("states")
    job(t1_combine_states, datapoints=["fewer/ZTF20abyfpze.json"])
    (other,) = state_files()
    assert other != f"states/{expected}.json"

    # both files of the object combine into one state: the union, the first id again
    shutil.rmtree("states")
    manifest = job(t1_combine_states, datapoints=["fewer/ZTF20abyfpze.json", *datapoints_files()])
    assert state_files() == [f"states/{expected}.json"]
    assert Path(f"states/{expected}.json").read_bytes() == first
    assert sorted(manifest["derivations"][f"states/{expected}.json"]) == [
        "datapoints/ZTF20abyfpze.json",
        "fewer/ZTF20abyfpze.json",
    ]


# --- T2 -----------------------------------------------------------------------------


def test_features_against_the_alerts(ztf: Path, job: Callable[..., dict[str, Any]]) -> None:
    files = [ztf / LONG, ztf / BUNDLE]
    kept = kept_by_object(files)
    job(t0_ingest_alerts, alerts=copy_in(*files))
    job(t1_combine_states, datapoints=datapoints_files())

    manifest = job(t2_lightcurve_features, states=state_files())

    rows = {r["objectId"]: r for r in read_csv("features.csv")}
    assert set(rows) == set(kept)
    assert sorted(manifest["derivations"]["features.csv"]) == state_files()
    records = {r["objectId"]: r for r in json.loads(Path("features.json").read_text())}
    for object_id, points in kept.items():
        row = rows[object_id]
        by_band: dict[str, list[Alert]] = {}
        for p in points.values():
            by_band.setdefault(BAND[p["fid"]], []).append(p)
        for band, in_band in by_band.items():
            peak = min(in_band, key=lambda p: p["magpsf"])
            assert float(row[f"peak_mag_{band}"]) == pytest.approx(peak["magpsf"])
            assert float(row[f"peak_jd_{band}"]) == pytest.approx(peak["jd"])
            first = min(in_band, key=lambda p: (p["jd"], p["candid"]))  # the same jd twice
            if first["jd"] < peak["jd"]:
                rise = (first["magpsf"] - peak["magpsf"]) / (peak["jd"] - first["jd"])
                assert float(row[f"rise_rate_{band}"]) == pytest.approx(rise)
            else:
                assert row[f"rise_rate_{band}"] == ""
            last_jd = max(p["jd"] for p in in_band)
            last = min((p for p in in_band if p["jd"] == last_jd), key=lambda p: p["candid"])
            if last_jd > peak["jd"]:
                fade = (last["magpsf"] - peak["magpsf"]) / (last_jd - peak["jd"])
                assert float(row[f"fade_rate_{band}"]) == pytest.approx(fade)
            else:
                assert row[f"fade_rate_{band}"] == ""
        for band in set(BAND.values()) - set(by_band):
            assert row[f"peak_mag_{band}"] == ""
        assert int(row["n_bands"]) == len(by_band)
        assert int(row["n_nights"]) == len({math.floor(p["jd"] - 0.5) for p in points.values()})
        snr = max(1.0857 / p["sigmapsf"] for p in points.values())
        assert float(row["max_significance"]) == pytest.approx(snr)
        assert int(row["n_detections"]) == len(points)
        assert float(row["jd_first"]) == min(p["jd"] for p in points.values())
        assert records[object_id]["peak_mag"] == min(p["magpsf"] for p in points.values())


def test_bazin_fit_of_a_long_light_curve(ztf: Path, job: Callable[..., dict[str, Any]]) -> None:
    kept = kept_by_object([ztf / LONG])["ZTF20abyfpze"]
    r_band = [p for p in kept.values() if p["fid"] == 2]
    assert len(r_band) >= 15
    flux = [10 ** (-0.4 * (p["magpsf"] - 23.9)) for p in r_band]
    jd = [p["jd"] for p in r_band]
    job(
        t0_ingest_alerts, alerts=copy_in(ztf / LONG, ztf / PARTNER), data_rights=["ztf_partnership"]
    )
    job(t1_combine_states, datapoints=datapoints_files())

    job(t2_bazin_fit, states=state_files(), band="r")

    rows = {r["objectId"]: r for r in read_csv("bazin.csv")}
    fit = rows["ZTF20abyfpze"]
    assert fit["status"] == "ok"
    assert int(fit["n_points"]) == len(r_band)
    assert int(fit["ndof"]) == len(r_band) - 5
    assert 0.05 < float(fit["chi2_ndof"]) < 5.0
    assert min(jd) - 30 < float(fit["t0"]) < max(jd)
    assert float(fit["t_rise"]) > 0 and float(fit["t_fall"]) > float(fit["t_rise"])
    assert float(fit["peak_flux_obs"]) == pytest.approx(max(flux))
    assert float(fit["peak_flux_model"]) == pytest.approx(max(flux), rel=0.3)
    assert all(math.isfinite(float(fit[f"{n}_err"])) for n in ("A", "B", "t0", "t_rise", "t_fall"))
    # in the i band, both have fewer than 5 points: a row each, not an error
    partner = kept_by_object([ztf / PARTNER], partnership=True)["ZTF18abxhyqv"]
    n_i = {
        "ZTF18abxhyqv": sum(p["fid"] == 3 for p in partner.values()),
        "ZTF20abyfpze": sum(p["fid"] == 3 for p in kept.values()),
    }
    assert all(n < 5 for n in n_i.values()) and n_i["ZTF18abxhyqv"] > 0
    manifest = job(t2_bazin_fit, states=state_files(), band="i", fits="bazin_i.csv")
    rows = {r["objectId"]: r for r in read_csv("bazin_i.csv")}
    assert {o: int(r["n_points"]) for o, r in rows.items()} == n_i
    assert {r["status"] for r in rows.values()} == {"too few points"}
    assert rows["ZTF18abxhyqv"]["A"] == ""
    assert count(manifest, "not_fitted") == 2


# --- T3 -----------------------------------------------------------------------------


def hand_selection(kept: dict[str, dict[int, Alert]], criteria: dict[str, Any]) -> set[str]:
    """The objects the YAML criteria accept, evaluated on the alerts' detections."""
    chosen = set()
    for object_id, points in kept.items():
        significant = [
            p
            for p in points.values()
            if BAND[p["fid"]] in criteria["filters"]
            and p["isdiffpos"] not in ("f", "0")
            and 1.0857 / p["sigmapsf"] >= criteria["significance"]
        ]
        if (
            len({p["fid"] for p in significant}) >= criteria["minBands"]
            and len({math.floor(p["jd"] - 0.5) for p in significant}) >= criteria["minNights"]
            and min((p["magpsf"] for p in significant), default=99.0) <= criteria["magLimit"]
        ):
            chosen.add(object_id)
    return chosen


def ingest_and_combine(files: list[Path], job: Callable[..., dict[str, Any]]) -> None:
    job(t0_ingest_alerts, alerts=copy_in(*files))
    job(t1_combine_states, datapoints=datapoints_files())


@pytest.mark.parametrize("name", ["tidesSNZTFSelect", "tidesSNZTFSelectDEMO1", "tidesSNLSSTSelect"])
def test_selection_against_the_yaml_by_hand(
    ztf: Path, job: Callable[..., dict[str, Any]], name: str
) -> None:
    yml = require_shared("data") / "tides" / "tidesSelectionFunctions.yml"
    criteria = yaml.safe_load(yml.read_text())[name]
    files = [ztf / BUNDLE, ztf / LONG, *sorted((ztf / "ztf_public_20180601").glob("*.avro"))]
    kept = kept_by_object(files)
    expected = hand_selection(kept, criteria)
    ingest_and_combine(files, job)

    manifest = job(
        t3_select_export,
        states=state_files(),
        selection=name,
        real_data=str(require_shared("data")),
    )

    rows = read_csv("targets.csv")
    assert {r["objectId"] for r in rows} == expected
    assert count(manifest, "selected") == len(expected)
    assert count(manifest, "rejected") == len(kept) - len(expected)
    assert count(manifest, "staging_skipped") == len(expected)
    (used,) = manifest["used"]
    assert used["path"] == "tides/tidesSelectionFunctions.yml"
    assert used["role"] == "selection_function"
    assert used["sha256"] == hashlib.sha256(yml.read_bytes()).hexdigest()
    by_id = {json.loads(Path(s).read_text())["objectId"]: s for s in state_files()}
    assert sorted(manifest["derivations"]["targets.vot"]) == sorted(
        [by_id[o] for o in expected] + [used["path"]]
    )
    table = parse_single_table("targets.vot").to_table()
    assert list(table["objectId"]) == [r["objectId"] for r in rows]
    assert str(table["ra"].unit) == "deg"
    assert table["ra"].meta["ucd"] == "pos.eq.ra;meta.main"
    for row in rows:
        points = kept[row["objectId"]].values()
        assert float(row["dec"]) == pytest.approx(np.mean([p["dec"] for p in points]))
        assert float(row["ra"]) == pytest.approx(np.mean([p["ra"] for p in points]))
        assert float(row["peak_mag"]) == min(p["magpsf"] for p in points)


def test_selection_refuses_bad_names_and_paths(
    ztf: Path, job: Callable[..., dict[str, Any]]
) -> None:
    ingest_and_combine([ztf / LONG], job)
    states = state_files()
    with pytest.raises(ValueError, match="tidesSNZTFSelect") as error:
        job(
            t3_select_export,
            states=states,
            selection="noSuchSelect",
            real_data=str(require_shared("data")),
        )
    assert "tidesHostLSSTSelect" in str(error.value)
    with pytest.raises(ValueError, match="outside"):
        job(
            t3_select_export,
            states=states,
            selection_file="../../../etc/passwd",
            real_data=str(require_shared("data")),
        )
    with pytest.raises(ValueError, match="real_data"):
        job(t3_select_export, states=states)
    with pytest.raises(ValueError, match="staging_url"):
        job(
            t3_select_export,
            states=states,
            real_data=str(require_shared("data")),
            staging_url="oracle://x/y",
        )


def staged(url: str) -> list[dict[str, Any]]:
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        query = sa.text("SELECT * FROM tides_stage ORDER BY object_id")
        rows = [dict(r) for r in connection.execute(query).mappings()]
    engine.dispose()
    return rows


def check_idempotent_upsert(ztf: Path, job: Callable[..., dict[str, Any]], url: str) -> None:
    files = [ztf / BUNDLE, ztf / LONG]
    ingest_and_combine(files, job)
    states = state_files()
    run = {"states": states, "real_data": str(require_shared("data")), "staging_url": url}

    manifest = job(t3_select_export, **run)
    first = staged(url)
    targets = read_csv("targets.csv")
    assert [r["object_id"] for r in first] == [t["objectId"] for t in targets]
    assert "ZTF20abyfpze" in [t["objectId"] for t in targets]
    for row, target in zip(first, targets, strict=True):
        assert row["state_id"] == target["state_id"]
        assert row["peak_mag"] == pytest.approx(float(target["peak_mag"]))
        assert row["n_nights"] == int(target["n_nights"])
        assert row["selection"] == "tidesSNZTFSelect"
        assert row["first_staged"] == row["updated"]
    assert count(manifest, "staged_inserted") == len(targets)

    manifest = job(t3_select_export, **run)
    assert staged(url) == first  # timestamps included
    assert count(manifest, "staged_unchanged") == len(targets)
    assert count(manifest, "staged_inserted") == count(manifest, "staged_updated") == 0

    # a new state of ZTF20abyfpze (its last detection gone): that row alone changes
    document = json.loads(Path("datapoints/ZTF20abyfpze.json").read_text())
    document["detections"] = document["detections"][:-1]
    Path("later").mkdir()
    Path("later/ZTF20abyfpze.json").write_text(json.dumps(document))
    job(
        t1_combine_states,
        datapoints=["later/ZTF20abyfpze.json"],
        states="later/states/*.json",
        index="later.csv",
    )
    (new_state,) = [p.as_posix() for p in Path("later/states").glob("*.json")]
    new_id = json.loads(Path(new_state).read_text())["id"]
    old_state = {json.loads(Path(s).read_text())["objectId"]: s for s in states}["ZTF20abyfpze"]
    run["states"] = [s for s in states if s != old_state] + [new_state]
    manifest = job(t3_select_export, **run)
    assert count(manifest, "staged_updated") == 1
    assert count(manifest, "staged_unchanged") == len(targets) - 1
    after = staged(url)
    assert [r["object_id"] for r in after] == [r["object_id"] for r in first]
    for old, row in zip(first, after, strict=True):
        if row["object_id"] != "ZTF20abyfpze":
            assert row == old
            continue
        assert row["state_id"] == new_id != old["state_id"]
        assert row["first_staged"] == old["first_staged"]
        assert row["updated"] > old["updated"]


def test_idempotent_upsert_sqlite(
    ztf: Path, job: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    check_idempotent_upsert(ztf, job, f"sqlite:///{tmp_path / 'stage.db'}")


def test_idempotent_upsert_postgresql(
    ztf: Path, job: Callable[..., dict[str, Any]], postgres_url: str
) -> None:
    check_idempotent_upsert(ztf, job, postgres_url)


# --- the chain ----------------------------------------------------------------------


def test_chain_t0_t1_t2_t3(ztf: Path, job: Callable[..., dict[str, Any]], tmp_path: Path) -> None:
    files = sample_files(ztf)
    alerts, _, _ = raw_points(files)
    kept = kept_by_object(files)
    url = f"sqlite:///{tmp_path / 'stage.db'}"

    t0 = job(t0_ingest_alerts, alerts=copy_in(*files))
    t1 = job(t1_combine_states, datapoints=datapoints_files())
    t2 = job(t2_lightcurve_features, states=state_files())
    fits = job(t2_bazin_fit, states=state_files())
    t3 = job(
        t3_select_export,
        states=state_files(),
        real_data=str(require_shared("data")),
        staging_url=url,
    )

    summary = json.loads(Path("ingest.json").read_text())
    assert count(t0, "alerts") == summary["alerts"] == len(alerts)
    assert count(t0, "objects") == len(datapoints_files()) == len(kept)
    assert count(t1, "states") == len(state_files()) == len(kept)
    index = read_csv("states.csv")
    assert (
        sum(int(r["n_detections"]) for r in index)
        == summary["detections"]
        == count(t0, "detections")
    )
    assert {r["objectId"] for r in index} == set(kept)
    assert len(read_csv("features.csv")) == count(t2, "states") == len(kept)
    assert (
        len(read_csv("bazin.csv")) == count(fits, "fitted") + count(fits, "not_fitted") == len(kept)
    )
    assert count(t3, "selected") + count(t3, "rejected") == len(kept)
    targets = read_csv("targets.csv")
    assert len(targets) == count(t3, "selected") == count(t3, "staged_inserted")
    assert [r["object_id"] for r in staged(url)] == [r["objectId"] for r in targets]
    ids = {r["id"] for r in index}
    assert {r["state_id"] for r in targets} <= ids
    assert {r["state_id"] for r in read_csv("features.csv")} == ids

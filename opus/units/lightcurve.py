"""T2 (compute): numbers of a state's light curve, a row per state.

Features come from the positive detections (a negative subtraction's magpsf is that
of a flux decrease, not a brightness of the transient). The Bazin fit works in flux,
where a negative subtraction is a negative flux, so it uses them all.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import curve_fit  # type: ignore[import-untyped, unused-ignore]

from opus.units.alerts import BANDS, NEGATIVE
from opus.units.manifest import Manifest

Record = dict[str, Any]
Array = NDArray[np.float64]
SNR = 1.0857  # 2.5 / ln 10: S/N of a detection = SNR / sigmapsf
ZERO_POINT = 23.9  # AB magnitude of 1 µJy
MIN_POINTS = 5  # as many as the Bazin parameters


def read_state(name: str) -> Record:
    try:
        state = json.loads(Path(name).read_text())
        if not isinstance(state, dict):
            raise TypeError("not a JSON object")
        for key in ("id", "objectId", "detections", "jd_last"):
            if key not in state:
                raise KeyError(key)
        if not isinstance(state["detections"], list):
            raise TypeError("detections is not a list")
        return state
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"states: {name!r} is not a state file: {exc}") from exc


def positive(point: Record) -> bool:
    return str(point.get("isdiffpos")) not in NEGATIVE


def significance(point: Record) -> float | None:
    sigma = point.get("sigmapsf")
    return SNR / sigma if isinstance(sigma, int | float) and sigma > 0 else None


def night(jd: float) -> int:
    """The night of a jd: floor(jd - 0.5), its UT date, which changes at UT midnight:
    Palomar's afternoon, never within one of its nights."""
    return math.floor(jd - 0.5)


def band_features(points: list[Record]) -> Record:
    """Peak (brightest magpsf) and its jd; rise rate from the first detection to the
    peak and fade rate from the peak to the last, in mag/day, both positive for a
    transient that brightens then fades (None when the peak is the first/last). Two
    detections can share a jd (two candidates of one exposure, both associated with the
    object): first and last are then the one of the lower candid."""
    points = sorted(points, key=lambda p: (p["jd"], p["id"]))
    peak = min(points, key=lambda p: (p["magpsf"], p["jd"]))
    first = points[0]
    last = min((p for p in points if p["jd"] == points[-1]["jd"]), key=lambda p: p["id"])
    rise = fade = None
    if peak["jd"] > first["jd"]:
        rise = (first["magpsf"] - peak["magpsf"]) / (peak["jd"] - first["jd"])
    if last["jd"] > peak["jd"]:
        fade = (last["magpsf"] - peak["magpsf"]) / (last["jd"] - peak["jd"])
    return {
        "n": len(points),
        "peak_mag": peak["magpsf"],
        "peak_jd": peak["jd"],
        "rise_rate": rise,
        "fade_rate": fade,
    }


def features_of(state: Record) -> Record:
    detections = state["detections"]
    good = [p for p in detections if positive(p) and p.get("magpsf") is not None]
    bands: dict[str, list[Record]] = {}
    for point in good:
        bands.setdefault(point["band"], []).append(point)
    per_band = {band: band_features(points) for band, points in sorted(bands.items())}
    peak = min(good, key=lambda p: (p["magpsf"], p["jd"])) if good else None
    snr = [s for s in (significance(p) for p in good) if s is not None]
    return {
        "state_id": state["id"],
        "objectId": state["objectId"],
        "n_detections": len(detections),
        "n_positive": len(good),
        "jd_first": min(p["jd"] for p in detections) if detections else None,
        "jd_last": state["jd_last"],
        "n_bands": len(bands),
        "n_nights": len({night(p["jd"]) for p in good}),
        "max_significance": max(snr) if snr else None,
        "peak_mag": peak["magpsf"] if peak else None,
        "peak_jd": peak["jd"] if peak else None,
        "peak_band": peak["band"] if peak else None,
        "bands": per_band,
    }


def write_csv(name: str, columns: list[str], rows: list[Record]) -> None:
    Path(name).parent.mkdir(parents=True, exist_ok=True)
    with open(name, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else row[c] for c in columns])


def t2_lightcurve_features(
    *, states: list[str], features: str = "features.csv", features_json: str = "features.json"
) -> None:
    """Features per state: `features` as CSV (per-band columns for g, r, i) and
    `features_json` as a JSON list with every band under "bands"."""
    if not states:
        raise ValueError("states: no state files given")
    records = [features_of(read_state(name)) for name in sorted(states)]
    head = ["state_id", "objectId", "n_detections", "n_positive", "jd_first", "jd_last"]
    head += ["n_bands", "n_nights", "max_significance", "peak_mag", "peak_jd", "peak_band"]
    per_band = ["n", "peak_mag", "peak_jd", "rise_rate", "fade_rate"]
    columns = head + [f"{key}_{band}" for band in BANDS.values() for key in per_band]
    rows = [
        {**r, **{f"{k}_{b}": v for b, f in r["bands"].items() for k, v in f.items()}}
        for r in records
    ]
    write_csv(features, columns, rows)
    Path(features_json).parent.mkdir(parents=True, exist_ok=True)
    Path(features_json).write_text(json.dumps(records, indent=1, sort_keys=True) + "\n")
    manifest = Manifest()
    for result in (features, features_json):
        manifest.derive(result, sorted(states))
    manifest.count("states", len(records))
    manifest.write()


def bazin(t: Array, a: float, b: float, t0: float, t_rise: float, t_fall: float) -> Array:
    """Bazin et al. (2009): A exp(-(t - t0)/t_fall) / (1 + exp(-(t - t0)/t_rise)) + B."""
    rise = np.exp(np.clip(-(t - t0) / t_rise, -700.0, 700.0))
    fall = np.exp(np.clip(-(t - t0) / t_fall, -700.0, 700.0))
    result: Array = a * fall / (1.0 + rise) + b
    return result


def flux_of(points: list[Record]) -> tuple[Array, Array, Array]:
    """jd, flux (µJy, negative for a negative subtraction) and its error
    (flux * 0.4 ln 10 * sigmapsf)."""
    jd = np.array([p["jd"] for p in points], dtype=float)
    sign = np.array([1.0 if positive(p) else -1.0 for p in points])
    mag = np.array([p["magpsf"] for p in points], dtype=float)
    flux = sign * 10.0 ** (-0.4 * (mag - ZERO_POINT))
    error = np.abs(flux) * 0.4 * math.log(10.0) * np.array([p["sigmapsf"] for p in points])
    return jd, flux, error


def fit_bazin(points: list[Record]) -> Record:
    """The fit's row: parameters (t0 as a jd, times in days, A and B in µJy) with their
    1-sigma errors, chi2/ndof and peak fluxes; status "ok" (maybe followed by ", at
    bound: t_fall" and the like), "too few points" or "fit failed: ..."."""
    points = [p for p in points if p.get("magpsf") is not None and p.get("sigmapsf")]
    row: Record = {"n_points": len(points)}
    if len(points) < MIN_POINTS:
        return {**row, "status": "too few points"}
    jd, flux, error = flux_of(points)
    ref = float(jd[np.argmax(flux)])  # times relative to the brightest point
    t = jd - ref
    # a difference flux has no baseline (B near 0); the rise is centred before the peak
    guess = [max(float(flux.max()), 1e-3) * 2.0, 0.0, -5.0, 5.0, 30.0]
    lower = [0.0, -np.inf, float(t.min()) - 100.0, 1e-2, 1e-1]
    upper = [np.inf, np.inf, float(t.max()) + 50.0, 1e3, 1e4]
    model: Callable[..., Array] = bazin
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values, covariance = curve_fit(
                model,
                t,
                flux,
                p0=guess,
                sigma=error,
                absolute_sigma=True,
                bounds=(lower, upper),
                maxfev=20000,
            )
    except (RuntimeError, ValueError) as exc:
        return {**row, "status": f"fit failed: {exc}"}
    errors = np.sqrt(np.diag(covariance))
    chi2 = float(np.sum(((flux - model(t, *values)) / error) ** 2))
    ndof = len(points) - MIN_POINTS
    grid = np.linspace(t.min(), t.max(), 1000)
    names = ["A", "B", "t0", "t_rise", "t_fall"]
    row.update({n: float(v) for n, v in zip(names, values, strict=True)})
    row.update({f"{n}_err": float(e) for n, e in zip(names, errors, strict=True)})
    row["t0"] += ref
    # a parameter at its bound is not constrained by the data: said in the status
    limits = zip(names, values, lower, upper, strict=True)
    hit = [n for n, v, lo, hi in limits if np.isclose(v, [lo, hi], rtol=1e-6, atol=0.0).any()]
    status = "ok" if np.all(np.isfinite(errors)) else "ok, errors undetermined"
    if hit:
        status += f", at bound: {' '.join(hit)}"
    return {
        **row,
        "status": status,
        "chi2": chi2,
        "ndof": ndof,
        "chi2_ndof": chi2 / ndof if ndof > 0 else None,
        "peak_flux_obs": float(flux.max()),
        "peak_flux_model": float(model(grid, *values).max()),
    }


def t2_bazin_fit(*, states: list[str], band: str = "r", fits: str = "bazin.csv") -> None:
    """A Bazin fit of each state's light curve in `band`; `fits` has a row per state,
    also for the states that cannot be fitted (status says why)."""
    if band not in BANDS.values():
        raise ValueError(f"band: {band!r} is not one of {', '.join(BANDS.values())}")
    if not states:
        raise ValueError("states: no state files given")
    rows = []
    for name in sorted(states):
        state = read_state(name)
        points = [p for p in state["detections"] if p.get("band") == band]
        row = {"state_id": state["id"], "objectId": state["objectId"], "band": band}
        rows.append({**row, **fit_bazin(points)})
    columns = ["state_id", "objectId", "band", "n_points", "status"]
    for name in ("A", "B", "t0", "t_rise", "t_fall"):
        columns += [name, f"{name}_err"]
    columns += ["chi2", "ndof", "chi2_ndof", "peak_flux_obs", "peak_flux_model"]
    write_csv(fits, columns, rows)
    manifest = Manifest()
    manifest.derive(fits, sorted(states))
    manifest.count("fitted", sum(r["status"].startswith("ok") for r in rows))
    manifest.count(
        "not_fitted",
        sum(not r["status"].startswith("ok") for r in rows),
        f"fewer than {MIN_POINTS} points in band {band}, or the fit failed",
    )
    manifest.write()

"""The spectrum of a point source in H.E.S.S. DL3 runs: reflected-region ON/OFF counts,
Li & Ma significance and a power-law fit.

For each run gammapy counts the events in a circle of `on_radius` around the target
(SpectrumDatasetMaker, with the effective area corrected for the PSF containment in that
circle, as a point source needs with these full-enclosure responses), takes the OFF counts
from regions reflected about the pointing (ReflectedRegionsBackgroundMaker, avoiding a
circle of `exclusion_radius` around the target) and keeps the energy bins where the
effective area exceeds 10 % of its maximum (SafeMaskMaker "aeff-max"). The runs are
stacked; the significance is the WStat one, i.e. Li & Ma (1983) eq. 17 on the stacked
n_on, n_off and alpha; the power law is fitted by WStat likelihood (Fit, Minuit).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from opus.units import dl3
from opus.units.manifest import Manifest

IRFS = ("aeff", "edisp", "psf")  # exposure, energy dispersion, containment correction
AEFF_PERCENT = 10
REFERENCE_TEV = 1.0
AMPLITUDE_UNIT = "cm-2 s-1 TeV-1"


def gammapy_spectrum(
    *,
    obs_ids: str = "23523 23526 23559 23592",
    ra: float = 83.633,
    dec: float = 22.014,
    on_radius: float = 0.11,
    emin: float = 0.7,
    emax: float = 30.0,
    nbins: int = 12,
    index_guess: float = 2.5,
    exclusion_radius: float = 0.3,
    offset_max: float = 2.5,
    datastore: str = "hess-dl3-dr1",
    spectrum_fits: str = "spectrum.fits",
    spectrum_vot: str = "spectrum.vot",
    fit_result: str = "fit.json",
    plot: str = "spectrum.png",
    real_data: str = "",
) -> None:
    """ON/OFF spectrum in `nbins` logarithmic bins of reconstructed energy from emin to
    emax TeV (in total, not per decade), its flux points and power-law fit."""
    ids = dl3.parse_obs_ids(obs_ids)
    ra, dec = dl3.check_target(ra, dec)
    emin, emax = dl3.check_energies(emin, emax)
    on_radius = dl3.finite(on_radius, "on_radius", low=0.0, high=1.0)
    if int(nbins) != nbins or not 1 <= int(nbins) <= 100:
        raise ValueError(f"nbins: must be an integer from 1 to 100, not {nbins!r}")
    nbins = int(nbins)
    index_guess = dl3.finite(index_guess, "index_guess", low=0.0, high=10.0)
    exclusion_radius = dl3.finite(exclusion_radius, "exclusion_radius", high=5.0)
    if exclusion_radius < 0:
        raise ValueError(f"exclusion_radius: must be >= 0 degrees, not {exclusion_radius!r}")
    offset_max = dl3.finite(offset_max, "offset_max", low=0.0, high=10.0)
    names = {
        "spectrum_fits": dl3.result_name(spectrum_fits, "spectrum_fits"),
        "spectrum_vot": dl3.result_name(spectrum_vot, "spectrum_vot"),
        "fit_result": dl3.result_name(fit_result, "fit_result"),
        "plot": dl3.result_name(plot, "plot"),
    }

    store = dl3.open_store(real_data, datastore)
    runs = dl3.observations(store, ids, IRFS)
    manifest = Manifest(root=store.root)
    keys = dl3.record(manifest, store, ids, IRFS)

    import astropy.units as u  # type: ignore[import-untyped, unused-ignore]
    from astropy.coordinates import SkyCoord  # type: ignore[import-untyped, unused-ignore]
    from gammapy.datasets import Datasets, SpectrumDataset  # type: ignore[import-untyped, unused-ignore]
    from gammapy.makers import (  # type: ignore[import-untyped, unused-ignore]
        ReflectedRegionsBackgroundMaker,
        SafeMaskMaker,
        SpectrumDatasetMaker,
    )
    from gammapy.maps import MapAxis, RegionGeom, WcsGeom  # type: ignore[import-untyped, unused-ignore]
    from regions import CircleSkyRegion  # type: ignore[import-untyped, unused-ignore]

    target = SkyCoord(ra, dec, unit="deg", frame="icrs")
    for run in runs:
        if dl3.pointing(run).separation(target).deg + on_radius > offset_max:
            raise ValueError(f"obs_ids: in run {run.obs_id} the ON region is beyond offset_max")

    on_region = CircleSkyRegion(target, on_radius * u.deg)
    energy = MapAxis.from_energy_bounds(emin, emax, nbins, unit="TeV")
    energy_true = MapAxis.from_energy_bounds(
        emin / 2, emax * 2, 20, unit="TeV", per_decade=True, name="energy_true"
    )
    empty = SpectrumDataset.create(RegionGeom.create(on_region, axes=[energy]), energy_true)
    width = 2 * (offset_max + on_radius) + 1
    field = WcsGeom.create(skydir=target, width=width, binsz=0.02, frame="icrs")
    # the region finder keeps OFF regions off the ON circle anyway; a larger exclusion
    # circle keeps them off the source's tails too
    radius = max(exclusion_radius, on_radius)
    exclusion = ~field.region_mask([CircleSkyRegion(target, radius * u.deg)])
    maker = SpectrumDatasetMaker(
        selection=["counts", "exposure", "edisp"], containment_correction=True
    )
    reflected = ReflectedRegionsBackgroundMaker(exclusion_mask=exclusion)
    safe = SafeMaskMaker(methods=["aeff-max"], aeff_percent=AEFF_PERCENT)
    datasets = Datasets()
    per_run = []
    for run in runs:
        dataset = maker.run(empty.copy(name=str(run.obs_id)), run)
        dataset = safe.run(reflected.run(dataset, run), run)
        if dataset.counts_off is None:
            raise ValueError(f"on_radius: no reflected OFF region fits in run {run.obs_id}")
        if not dataset.mask_safe.data.any():
            raise ValueError(f"emin: no energy bin of run {run.obs_id} is in its safe range")
        datasets.append(dataset)
        per_run.append(_summary(dataset, run.obs_id))

    stacked = datasets.stack_reduce(name="stacked")
    totals = _summary(stacked, None)
    fit, model = _fit(stacked, index_guess)
    flux_points = _flux_points(stacked, energy.edges)
    table = _table(stacked, flux_points)
    table.meta.update(
        {
            "OBS_IDS": " ".join(map(str, ids)),
            "RA_OBJ": ra,
            "DEC_OBJ": dec,
            "ON_RAD": on_radius,
            "LIVETIME": totals["livetime"],
        }
    )
    table.write(names["spectrum_fits"], format="fits", overwrite=True)
    table.write(names["spectrum_vot"], format="votable", overwrite=True)
    result = {
        **fit,
        **{k: v for k, v in totals.items() if k != "obs_id"},
        "livetime_unit": "s",
        "target": {"ra": ra, "dec": dec, "frame": "icrs", "unit": "deg"},
        "on_radius": on_radius,
        "energy_bins": {"emin": emin, "emax": emax, "nbins": nbins, "unit": "TeV"},
        "containment_correction": True,
        "safe_mask": f"aeff-max {AEFF_PERCENT}%",
        "obs_ids": ids,
        "runs": per_run,
    }
    Path(names["fit_result"]).write_text(json.dumps(_plain(result), indent=1, allow_nan=False))
    _plot(names["plot"], table, model, emin, emax)

    sources = dl3.all_keys(keys)
    for name in names.values():
        manifest.derive(name, sources)
    manifest.count("n_on", totals["n_on"], "events in the ON region in the safe energy range")
    manifest.count("n_off", totals["n_off"], "events in the reflected OFF regions")
    manifest.context.update({"datastore": datastore, "obs_ids": " ".join(map(str, ids))})
    dl3.note_versions(manifest, ["iminuit", "matplotlib"])
    manifest.write()


def _summary(dataset: Any, obs_id: int | None) -> dict[str, Any]:
    """ON/OFF totals in the safe energy range and their Li & Ma significance."""
    from gammapy.stats import WStatCountsStatistic  # type: ignore[import-untyped, unused-ignore]

    info = dataset.info_dict()
    n_on, n_off, alpha = int(info["counts"]), int(info["counts_off"]), float(info["alpha"])
    statistic = WStatCountsStatistic(n_on, n_off, alpha)
    low, high = dataset.energy_range_safe
    summary = {
        "obs_id": obs_id,
        "n_on": n_on,
        "n_off": n_off,
        "alpha": alpha,
        "excess": float(statistic.n_sig),
        "significance": float(statistic.sqrt_ts),
        "livetime": float(info["livetime"].to_value("s")),
        "energy_min_safe": float(np.nanmin(low.quantity.to_value("TeV"))),
        "energy_max_safe": float(np.nanmax(high.quantity.to_value("TeV"))),
    }
    if obs_id is None:
        del summary["obs_id"]
    return summary


def _fit(dataset: Any, index_guess: float) -> tuple[dict[str, Any], Any]:
    """Power law dN/dE = amplitude (E / 1 TeV)^-index fitted by WStat likelihood."""
    import astropy.units as u  # type: ignore[import-untyped, unused-ignore]
    from gammapy.modeling import Fit  # type: ignore[import-untyped, unused-ignore]
    from gammapy.modeling.models import (  # type: ignore[import-untyped, unused-ignore]
        PowerLawSpectralModel,
        SkyModel,
    )

    spectral = PowerLawSpectralModel(
        index=index_guess,
        amplitude=1e-12 * u.Unit(AMPLITUDE_UNIT),
        reference=REFERENCE_TEV * u.TeV,
    )
    model = SkyModel(spectral_model=spectral, name="source")
    dataset.models = [model]
    result = Fit().run([dataset])
    index, amplitude = spectral.parameters["index"], spectral.parameters["amplitude"]
    reference = spectral.parameters["reference"]
    fit = {
        "model": "PowerLawSpectralModel",
        "index": float(index.value),
        "index_error": float(index.error),
        "amplitude": float(amplitude.quantity.to_value(AMPLITUDE_UNIT)),
        "amplitude_error": float((amplitude.error * amplitude.unit).to_value(AMPLITUDE_UNIT)),
        "amplitude_unit": AMPLITUDE_UNIT,
        "reference": float(reference.quantity.to_value("TeV")),
        "reference_error": float(reference.error),
        "reference_unit": "TeV",
        "reference_frozen": bool(reference.frozen),
        "success": bool(result.success),
        "message": str(result.message),
        "covariance_success": bool(result.covariance_result.success),
        "stat_type": "wstat",
        "stat_sum": float(result.total_stat),
    }
    return fit, model


def _flux_points(dataset: Any, edges: Any) -> Any:
    """Flux points in the spectrum's own bins (upper limits where the excess is weak)."""
    from gammapy.estimators import FluxPointsEstimator  # type: ignore[import-untyped, unused-ignore]

    estimator = FluxPointsEstimator(energy_edges=edges, source="source", selection_optional=["ul"])
    return estimator.run([dataset])


def _table(dataset: Any, flux_points: Any) -> Any:
    """Per energy bin: bounds, ON/OFF counts, alpha, excess, significance, safe or not,
    and the flux point (dN/dE and E^2 dN/dE with errors, upper limit, TS)."""
    import astropy.units as u  # type: ignore[import-untyped, unused-ignore]
    from astropy.table import Table  # type: ignore[import-untyped, unused-ignore]
    from gammapy.stats import WStatCountsStatistic  # type: ignore[import-untyped, unused-ignore]

    axis = dataset.counts.geom.axes["energy"]
    n_on = dataset.counts.data.ravel().astype(np.int64)
    n_off = dataset.counts_off.data.ravel().astype(np.int64)
    alpha = dataset.alpha.data.ravel().astype(float)
    statistic = WStatCountsStatistic(n_on, n_off, alpha)
    table = Table()
    table["e_min"] = axis.edges_min.to(u.TeV)
    table["e_max"] = axis.edges_max.to(u.TeV)
    table["e_ref"] = axis.center.to(u.TeV)
    table["n_on"] = n_on
    table["n_off"] = n_off
    table["alpha"] = alpha
    table["background"] = statistic.n_bkg
    table["excess"] = statistic.n_sig
    table["significance"] = statistic.sqrt_ts
    table["safe"] = dataset.mask_safe.data.ravel().astype(bool)
    dnde = flux_points.to_table(sed_type="dnde")
    e2dnde = flux_points.to_table(sed_type="e2dnde")
    if len(dnde) != len(table) or not np.allclose(dnde["e_min"].quantity, table["e_min"]):
        raise RuntimeError("flux points do not follow the spectrum's energy bins")
    flux_unit, sed_unit = u.Unit("cm-2 s-1 TeV-1"), u.Unit("TeV cm-2 s-1")
    for column in ("dnde", "dnde_err", "dnde_ul"):
        table[column] = dnde[column].quantity.to(flux_unit)
    for column in ("e2dnde", "e2dnde_err", "e2dnde_ul"):
        table[column] = e2dnde[column].quantity.to(sed_unit)
    table["ts"] = np.asarray(dnde["ts"], dtype=float)
    table["is_ul"] = np.asarray(dnde["is_ul"], dtype=bool)
    descriptions = {
        "e_min": "lower edge of the reconstructed-energy bin",
        "e_max": "upper edge of the reconstructed-energy bin",
        "e_ref": "logarithmic centre of the bin",
        "n_on": "events in the ON region",
        "n_off": "events in the reflected OFF regions",
        "alpha": "ON/OFF exposure ratio",
        "background": "alpha * n_off",
        "excess": "n_on - alpha * n_off",
        "significance": "Li & Ma (1983) eq. 17 in this bin",
        "safe": "bin inside the safe energy range of at least one run",
        "dnde": "differential flux at e_ref (flux point)",
        "dnde_err": "its symmetric 1 sigma error",
        "dnde_ul": "its 2 sigma upper limit",
        "e2dnde": "e_ref^2 * dnde",
        "e2dnde_err": "its symmetric 1 sigma error",
        "e2dnde_ul": "its 2 sigma upper limit",
        "ts": "test statistic of the flux point",
        "is_ul": "the flux point is an upper limit (TS < 4)",
    }
    for column, text in descriptions.items():
        table[column].description = text
    return table


def _plot(name: str, table: Any, model: Any, emin: float, emax: float) -> None:
    """Counts per bin (ON, and the OFF estimate alpha*n_off) and the SED: flux points and
    the fitted power law with its error band, on a pyplot-free Figure (no display, no
    global backend)."""
    import astropy.units as u  # type: ignore[import-untyped, unused-ignore]
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.5), layout="constrained")
    counts, sed = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    edges = np.append(np.asarray(table["e_min"]), float(table["e_max"][-1]))
    counts.stairs(np.asarray(table["n_on"]), edges, label="ON")
    counts.stairs(np.asarray(table["background"]), edges, label="alpha x OFF")
    counts.set(xscale="log", xlabel="reconstructed energy (TeV)", ylabel="events per bin")
    counts.legend()

    energy = np.geomspace(emin, emax, 100) * u.TeV
    dnde, errn, errp = model.spectral_model.evaluate_error(energy)
    scale = energy.to_value("TeV") ** 2
    unit = "cm-2 s-1 TeV-1"
    sed.plot(energy.value, scale * dnde.to_value(unit), label="power law")
    sed.fill_between(
        energy.value,
        scale * (dnde - errn).to_value(unit),
        scale * (dnde + errp).to_value(unit),
        alpha=0.3,
    )
    e_ref = np.asarray(table["e_ref"])
    value, error = np.asarray(table["e2dnde"]), np.asarray(table["e2dnde_err"])
    upper, limit = np.asarray(table["is_ul"]), np.asarray(table["e2dnde_ul"])
    point = ~upper & np.isfinite(value)
    sed.errorbar(e_ref[point], value[point], yerr=error[point], fmt="o", label="flux points")
    shown = upper & np.isfinite(limit)
    sed.errorbar(
        e_ref[shown], limit[shown], yerr=0.3 * limit[shown], uplims=True, fmt="v", color="C1"
    )
    sed.set(
        xscale="log",
        yscale="log",
        xlabel="energy (TeV)",
        ylabel="E² dN/dE (TeV cm⁻² s⁻¹)",
    )
    sed.legend()
    figure.savefig(name, dpi=90)


def _plain(value: Any) -> Any:
    """JSON-ready: numpy scalars to Python, NaN and infinities to null."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value

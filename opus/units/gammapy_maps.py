"""Sky maps of H.E.S.S. DL3 runs: counts, background and excess in one energy band.

gammapy bins the events of each run on a WCS grid around the target (MapDatasetMaker),
cuts pixels beyond `offset_max` from the run's pointing (SafeMaskMaker "offset-max": the
background model is unreliable at the field-of-view edge), predicts the background from
the run's BKG response table and rescales it to the counts outside a circle of
`exclusion_radius` around the target (FoVBackgroundMaker "scale"), then stacks the runs.
Excess = counts - background. Energies are reconstructed energies in TeV.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from opus.units import dl3
from opus.units.manifest import Manifest

PROJECTIONS = frozenset({"CAR", "TAN", "SIN", "ARC", "STG", "ZEA", "AIT", "MOL", "CEA", "MER"})
MAX_PIX = 2000
MAX_WIDTH = 20.0  # degrees: a few fields of view (the H.E.S.S. one is 5 deg across)


def gammapy_maps(
    *,
    obs_ids: str = "23523 23526 23559 23592",
    ra: float = 83.633,
    dec: float = 22.014,
    nxpix: int = 250,
    nypix: int = 250,
    binsz: float = 0.02,
    projection: str = "CAR",
    emin: float = 1.0,
    emax: float = 10.0,
    offset_max: float = 2.5,
    exclusion_radius: float = 0.3,
    datastore: str = "hess-dl3-dr1",
    counts_map: str = "counts.fits",
    background_map: str = "background.fits",
    excess_map: str = "excess.fits",
    preview: str = "preview.png",
    real_data: str = "",
) -> None:
    """Counts, background and excess maps (FITS images with a celestial WCS, one energy
    band emin-emax TeV) of the runs `obs_ids` centred on (ra, dec), and a PNG preview."""
    ids = dl3.parse_obs_ids(obs_ids)
    ra, dec = dl3.check_target(ra, dec)
    emin, emax = dl3.check_energies(emin, emax)
    nxpix, nypix = _pixels(nxpix, "nxpix"), _pixels(nypix, "nypix")
    binsz = dl3.finite(binsz, "binsz", low=0.0, high=1.0)
    if max(nxpix, nypix) * binsz > MAX_WIDTH:
        raise ValueError(
            f"binsz: a {nxpix}x{nypix} map of {binsz} deg pixels is wider than {MAX_WIDTH} deg"
        )
    projection = str(projection).upper()
    if projection not in PROJECTIONS:
        raise ValueError(f"projection: {projection!r} is not one of {sorted(PROJECTIONS)}")
    offset_max = dl3.finite(offset_max, "offset_max", low=0.0, high=10.0)
    exclusion_radius = dl3.finite(exclusion_radius, "exclusion_radius", high=10.0)
    if exclusion_radius < 0:
        raise ValueError(f"exclusion_radius: must be >= 0 degrees, not {exclusion_radius!r}")
    names = {
        "counts_map": dl3.result_name(counts_map, "counts_map"),
        "background_map": dl3.result_name(background_map, "background_map"),
        "excess_map": dl3.result_name(excess_map, "excess_map"),
        "preview": dl3.result_name(preview, "preview"),
    }

    store = dl3.open_store(real_data, datastore)
    runs = dl3.observations(store, ids, ["bkg"])
    manifest = Manifest(root=store.root)
    keys = dl3.record(manifest, store, ids, ["bkg"])

    import astropy.units as u  # type: ignore[import-untyped, unused-ignore]
    from astropy.coordinates import SkyCoord  # type: ignore[import-untyped, unused-ignore]
    from gammapy.datasets import MapDataset  # type: ignore[import-untyped, unused-ignore]
    from gammapy.makers import (  # type: ignore[import-untyped, unused-ignore]
        FoVBackgroundMaker,
        MapDatasetMaker,
        SafeMaskMaker,
    )
    from gammapy.maps import MapAxis, WcsGeom  # type: ignore[import-untyped, unused-ignore]
    from regions import CircleSkyRegion  # type: ignore[import-untyped, unused-ignore]

    target = SkyCoord(ra, dec, unit="deg", frame="icrs")
    band = MapAxis.from_energy_bounds(emin, emax, 1, unit="TeV")
    geom = WcsGeom.create(
        skydir=target, npix=(nxpix, nypix), binsz=binsz, proj=projection, frame="icrs", axes=[band]
    )
    reach = offset_max + 0.5 * binsz * float(np.hypot(nxpix, nypix))
    for run in runs:
        if dl3.pointing(run).separation(target).deg > reach:
            raise ValueError(f"obs_ids: run {run.obs_id} does not overlap the map")

    exclusion = None  # 0: scale the background to all counts
    if exclusion_radius > 0:
        exclusion = ~geom.region_mask([CircleSkyRegion(target, exclusion_radius * u.deg)])
    maker = MapDatasetMaker(selection=["counts", "background"])
    safe = SafeMaskMaker(methods=["offset-max"], offset_max=offset_max * u.deg)
    fov = FoVBackgroundMaker(method="scale", exclusion_mask=exclusion)
    stacked = MapDataset.create(geom, name="stacked")
    beyond, norms = 0, []
    for run in runs:
        # far outside the field of view the BKG table's log extrapolation overflows; those
        # pixels are beyond offset_max, cut by the safe mask before anything uses them
        with np.errstate(over="ignore"):
            dataset = maker.run(MapDataset.create(geom, name=str(run.obs_id)), run)
        dataset = safe.run(dataset, run)
        beyond += int(np.nansum(dataset.counts.data[~dataset.mask_safe.data]))
        with np.errstate(invalid="ignore", divide="ignore"):
            dataset = fov.run(dataset)
        if not dataset.mask_safe.data.any():  # gammapy masks a run it cannot normalise
            raise ValueError(
                f"exclusion_radius: the background of run {run.obs_id} cannot be normalised"
                " (no counts in the map within offset_max and outside the exclusion circle)"
            )
        norms.append(f"{run.obs_id}:{dataset.background_model.spectral_model.norm.value:.4f}")
        stacked.stack(dataset)

    counts = stacked.counts.sum_over_axes(keepdims=False)
    background = stacked.npred_background().sum_over_axes(keepdims=False)
    excess_data = counts.data - background.data
    cards = {
        "E_MIN": (emin, "[TeV] lower reconstructed energy of the band"),
        "E_MAX": (emax, "[TeV] upper reconstructed energy of the band"),
        "OBS_IDS": (" ".join(map(str, ids)), "H.E.S.S. runs stacked"),
        "OFFMAX": (offset_max, "[deg] pixels farther from a run's pointing cut"),
    }
    _write_image(names["counts_map"], counts.data.astype(np.int32), counts.geom, "count", cards)
    _write_image(names["background_map"], background.data, counts.geom, "count", cards)
    _write_image(names["excess_map"], excess_data, counts.geom, "count", cards)
    title = f"{emin:g}-{emax:g} TeV, runs {' '.join(map(str, ids))}"
    _preview(names["preview"], counts, excess_data, max(0.05, 2 * binsz), title)

    sources = dl3.all_keys(keys)
    for result in names.values():
        manifest.derive(result, sources)
    manifest.count("events_in_map", int(counts.data.sum()), "events binned in the counts map")
    manifest.count(
        "events_beyond_offset_max",
        beyond,
        f"events in the map footprint in pixels over {offset_max:g} deg from the run's pointing",
    )
    manifest.context.update(
        {
            "datastore": datastore,
            "obs_ids": " ".join(map(str, ids)),
            "background": "BKG response table, FoV-scaled outside the exclusion circle",
            "fov_background_norm": " ".join(norms),
        }
    )
    dl3.note_versions(manifest, ["matplotlib"])
    manifest.write()


def _pixels(value: int, name: str) -> int:
    number = int(value)
    if number != value or not 1 <= number <= MAX_PIX:
        raise ValueError(f"{name}: must be an integer from 1 to {MAX_PIX}, not {value!r}")
    return number


def _write_image(
    name: str, data: np.ndarray[Any, Any], geom: Any, bunit: str, cards: dict[str, Any]
) -> None:
    """A FITS primary image with the map's celestial WCS, readable by any FITS tool."""
    from astropy.io import fits  # type: ignore[import-untyped, unused-ignore]

    header = geom.wcs.to_header()
    header["BUNIT"] = bunit
    for key, card in cards.items():
        header[key] = card
    fits.PrimaryHDU(data=data, header=header).writeto(Path(name), overwrite=True)


def _preview(
    name: str, counts: Any, excess: np.ndarray[Any, Any], smooth_deg: float, title: str
) -> None:
    """Counts and (smoothed, for the eye only) excess side by side, drawn without pyplot
    so no display or global backend is involved."""
    from matplotlib.colors import Normalize, PowerNorm
    from matplotlib.figure import Figure

    smoothed = counts.copy(data=excess).smooth(width=f"{smooth_deg} deg")
    figure = Figure(figsize=(11, 4.8), layout="constrained")
    panels = (
        (counts.data, "counts (square-root scale)", PowerNorm(0.5)),
        (smoothed.data, f"excess (smoothed, {smooth_deg:g} deg)", Normalize()),
    )
    for index, (image, label, norm) in enumerate(panels, start=1):
        axes = figure.add_subplot(1, 2, index, projection=counts.geom.wcs)
        shown = axes.imshow(image, origin="lower", cmap="inferno", norm=norm)
        axes.set_title(label)
        axes.set_xlabel("RA")
        axes.set_ylabel("Dec")
        figure.colorbar(shown, ax=axes, label="events per pixel")
    figure.suptitle(title)
    figure.savefig(name, dpi=90)

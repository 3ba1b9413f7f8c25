"""The gammapy units on the real H.E.S.S. DL3 DR1 Crab runs.

Their numbers are checked against numbers computed here from the event lists with astropy
alone (no gammapy): events binned in the map's pixels, events in the ON circle, Li & Ma's
formula, the runs' live times; and their manifests against the files' own checksums.
They run as the server runs them: cwd the job's folder, the manifest where
`manifest.TARGET` says (as opus.execution.call sets it)."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.coordinates import SkyCoord  # type: ignore[import-untyped, unused-ignore]
from astropy.io import fits  # type: ignore[import-untyped, unused-ignore]
from astropy.io.votable import parse  # type: ignore[import-untyped, unused-ignore]
from astropy.table import Table  # type: ignore[import-untyped, unused-ignore]
from astropy.wcs import WCS  # type: ignore[import-untyped, unused-ignore]

from opus.units import manifest as manifest_module
from opus.units.gammapy_maps import gammapy_maps
from opus.units.gammapy_spectrum import gammapy_spectrum
from tests.servers import require_shared

pytestmark = pytest.mark.any_database  # the units run in a folder, without the server


def real_data() -> Path:
    """The shared real-data folder (required in CI, a skip elsewhere)."""
    return require_shared("data/hess-dl3-dr1").parent


CRAB = (83.633, 22.014)
MAPS: dict[str, Any] = {
    # a small map whose corners lie beyond offset_max of both runs, so that cut is tested
    "obs_ids": "23523,23526",
    "nxpix": 100,
    "nypix": 80,
    "binsz": 0.02,
    "emin": 1.0,
    "emax": 10.0,
    "offset_max": 1.0,
    "exclusion_radius": 0.3,
}
SPECTRUM: dict[str, Any] = {
    # from below the runs' safe thresholds (0.53 or 0.71 TeV), so the per-run safe energy
    # ranges matter in the ON counts
    "obs_ids": "23523 23526 23559 23592",
    "on_radius": 0.11,
    "emin": 0.3,
    "emax": 30.0,
    "nbins": 16,
}
MAP_FILES = ("counts.fits", "background.fits", "excess.fits")


def run_file(obs_id: int) -> Path:
    return real_data() / "hess-dl3-dr1" / "data" / f"hess_dl3_dr1_obs_id_{obs_id:06d}.fits.gz"


def events(obs_id: int) -> tuple[Any, Any]:
    """A run's EVENTS table and header, read with astropy."""
    with fits.open(run_file(obs_id)) as hdus:
        return hdus["EVENTS"].data.copy(), hdus["EVENTS"].header.copy()


def ids(text: str) -> list[int]:
    return [int(i) for i in text.replace(",", " ").split()]


def run_unit(folder: Path, unit: Any, parameters: dict[str, Any]) -> dict[str, Any]:
    """Run a unit as the server does: cwd the job's folder, the manifest where
    `manifest.TARGET` says; returns the manifest."""
    manifest = folder.parent / f"{folder.name}-manifest.json"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setattr(manifest_module, "TARGET", manifest)
        unit(**parameters, real_data=str(real_data()))
    result: dict[str, Any] = json.loads(manifest.read_text())
    return result


@pytest.fixture(scope="module")
def maps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any]]]:
    folder = tmp_path_factory.mktemp("maps")
    yield folder, run_unit(folder, gammapy_maps, MAPS)


@pytest.fixture(scope="module")
def spectrum(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any]]]:
    folder = tmp_path_factory.mktemp("spectrum")
    yield folder, run_unit(folder, gammapy_spectrum, SPECTRUM)


def test_counts_map_holds_the_events_of_its_pixels(maps: tuple[Path, dict[str, Any]]) -> None:
    """Every event of [emin, emax) TeV whose position falls in a pixel of the map, in a
    pixel whose centre is within offset_max of its run's pointing (the safe mask)."""
    folder, manifest = maps
    with fits.open(folder / "counts.fits") as hdus:
        counts, wcs = hdus[0].data, WCS(hdus[0].header)
    ny, nx = counts.shape
    kept = in_footprint = 0
    for obs_id in ids(MAPS["obs_ids"]):
        table, header = events(obs_id)
        band = (table["ENERGY"] >= MAPS["emin"]) & (table["ENERGY"] < MAPS["emax"])
        x, y = wcs.world_to_pixel(SkyCoord(table["RA"][band], table["DEC"][band], unit="deg"))
        ix, iy = np.floor(x + 0.5).astype(int), np.floor(y + 0.5).astype(int)
        inside = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
        centres = wcs.pixel_to_world(ix[inside], iy[inside])
        pointing = SkyCoord(header["RA_PNT"], header["DEC_PNT"], unit="deg")
        kept += int((centres.separation(pointing).deg < MAPS["offset_max"]).sum())
        in_footprint += int(inside.sum())
    assert kept > 500
    assert int(counts.sum()) == kept
    assert manifest["counts"]["events_in_map"]["value"] == kept
    assert manifest["counts"]["events_beyond_offset_max"]["value"] == in_footprint - kept > 0


def test_background_is_scaled_to_the_counts_outside_the_source(
    maps: tuple[Path, dict[str, Any]],
) -> None:
    """FoV normalisation: outside the exclusion circle the background adds up to the
    counts; inside, the Crab stands out; excess = counts - background."""
    folder, _ = maps
    counts = fits.getdata(folder / "counts.fits").astype(float)
    background = fits.getdata(folder / "background.fits")
    excess = fits.getdata(folder / "excess.fits")
    assert np.all(np.isfinite(background)) and np.all(background >= 0)
    np.testing.assert_allclose(excess, counts - background, atol=1e-4)
    wcs = WCS(fits.getheader(folder / "counts.fits"))
    y, x = np.mgrid[: counts.shape[0], : counts.shape[1]]
    source = wcs.pixel_to_world(x, y).separation(SkyCoord(*CRAB, unit="deg")).deg
    outside = source > MAPS["exclusion_radius"]
    assert background[outside].sum() == pytest.approx(counts[outside].sum(), rel=1e-3)
    assert excess[~outside].sum() > 100
    assert excess[source < 0.1].sum() > 0.5 * excess[~outside].sum()


def test_map_files_are_images_with_a_celestial_wcs(maps: tuple[Path, dict[str, Any]]) -> None:
    folder, _ = maps
    for name in MAP_FILES:
        with fits.open(folder / name) as hdus:
            header, data = hdus[0].header, hdus[0].data
        wcs = WCS(header)
        assert wcs.has_celestial and wcs.naxis == 2
        assert (header["CTYPE1"], header["CTYPE2"]) == ("RA---CAR", "DEC--CAR")
        assert data.shape == (MAPS["nypix"], MAPS["nxpix"])
        assert (header["E_MIN"], header["E_MAX"]) == (MAPS["emin"], MAPS["emax"])
        centre = wcs.pixel_to_world((MAPS["nxpix"] - 1) / 2, (MAPS["nypix"] - 1) / 2)
        assert centre.separation(SkyCoord(*CRAB, unit="deg")).deg < 1e-6
        assert abs(wcs.proj_plane_pixel_scales()[0].to_value("deg") - MAPS["binsz"]) < 1e-9
    assert (folder / "preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def check_manifest(
    manifest: dict[str, Any], obs_ids: list[int], irfs: set[str], results: list[str]
) -> None:
    """Each run file with its events, GTI and the response tables the analysis read (and
    no other), with its real checksum; the index files; the versions; the derivations."""
    used = manifest["used"]
    for obs_id in obs_ids:
        file = run_file(obs_id)
        key = f"hess-dl3-dr1/data/{file.name}"
        entries = {u["hdu"]: u for u in used if u["path"] == key}
        assert set(entries) == {"EVENTS", "GTI"} | irfs
        assert entries["EVENTS"]["role"] == "dl3_events"
        assert {entries[h]["role"] for h in irfs} == {"irf"}
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        for entry in entries.values():
            assert (entry["sha256"], entry["size"]) == (digest, file.stat().st_size)
            assert entry["content_type"] == "application/fits"
        for result in results:
            assert key in manifest["derivations"][result]
    indexes = {u["path"]: u for u in used if u["role"] == "dl3_index"}
    for name in ("obs-index.fits.gz", "hdu-index.fits.gz"):
        path = real_data() / "hess-dl3-dr1" / name
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert indexes[f"hess-dl3-dr1/{name}"]["sha256"] == digest
    assert len(used) == len(obs_ids) * (2 + len(irfs)) + 2
    for package in ("gammapy", "numpy", "astropy", "regions"):
        assert manifest["context"][package] == version(package)


def test_maps_manifest(maps: tuple[Path, dict[str, Any]]) -> None:
    _, manifest = maps
    results = [*MAP_FILES, "preview.png"]
    check_manifest(manifest, ids(MAPS["obs_ids"]), {"BKG"}, results)


def test_spectrum_manifest(spectrum: tuple[Path, dict[str, Any]]) -> None:
    _, manifest = spectrum
    results = ["spectrum.fits", "spectrum.vot", "fit.json", "spectrum.png"]
    check_manifest(manifest, ids(SPECTRUM["obs_ids"]), {"AEFF", "EDISP", "PSF"}, results)


def test_n_on_is_the_events_in_the_on_circle(spectrum: tuple[Path, dict[str, Any]]) -> None:
    """Each run's ON count: its events within on_radius of the Crab with a reconstructed
    energy in the run's safe range (whole bins of the spectrum)."""
    folder, manifest = spectrum
    fit = json.loads((folder / "fit.json").read_text())
    target = SkyCoord(*CRAB, unit="deg")
    total = 0
    for run in fit["runs"]:
        table, _ = events(run["obs_id"])
        assert SPECTRUM["emin"] < run["energy_min_safe"] < run["energy_max_safe"]
        energy = table["ENERGY"]
        band = (energy >= run["energy_min_safe"]) & (energy < run["energy_max_safe"])
        near = SkyCoord(table["RA"], table["DEC"], unit="deg").separation(target).deg
        n_on = int((band & (near < SPECTRUM["on_radius"])).sum())
        assert run["n_on"] == n_on
        total += n_on
    assert fit["n_on"] == total == manifest["counts"]["n_on"]["value"]
    assert fit["n_off"] == manifest["counts"]["n_off"]["value"] > 0


def li_ma(n_on: int, n_off: int, alpha: float) -> float:
    """Li & Ma (1983) eq. 17."""
    total = n_on + n_off
    return math.sqrt(2) * math.sqrt(
        n_on * math.log((1 + alpha) / alpha * n_on / total)
        + n_off * math.log((1 + alpha) * n_off / total)
    )


def test_significance_is_li_and_ma(spectrum: tuple[Path, dict[str, Any]]) -> None:
    folder, _ = spectrum
    fit = json.loads((folder / "fit.json").read_text())
    for summary in [fit, *fit["runs"]]:
        n_on, n_off, alpha = summary["n_on"], summary["n_off"], summary["alpha"]
        assert summary["excess"] == pytest.approx(n_on - alpha * n_off, rel=1e-9)
        assert summary["significance"] == pytest.approx(li_ma(n_on, n_off, alpha), rel=1e-9)
    assert fit["significance"] > 20


def test_crab_power_law(spectrum: tuple[Path, dict[str, Any]]) -> None:
    folder, _ = spectrum
    fit = json.loads((folder / "fit.json").read_text())
    assert fit["success"] and fit["covariance_success"]
    assert 2.3 < fit["index"] < 2.9
    assert 0 < fit["index_error"] < 0.2
    assert fit["amplitude_unit"] == "cm-2 s-1 TeV-1"
    assert 1e-11 < fit["amplitude"] < 1e-10 and 0 < fit["amplitude_error"] < fit["amplitude"]
    assert (fit["reference"], fit["reference_unit"]) == (1.0, "TeV")
    livetime = sum(events(run)[1]["LIVETIME"] for run in ids(SPECTRUM["obs_ids"]))
    assert fit["livetime"] == pytest.approx(livetime, rel=1e-6)


def test_spectrum_tables(spectrum: tuple[Path, dict[str, Any]]) -> None:
    """The FITS and VOTable spectra: the same bins, with units, adding up to the totals."""
    folder, _ = spectrum
    fit = json.loads((folder / "fit.json").read_text())
    from_fits = Table.read(folder / "spectrum.fits")
    from_vot = parse(str(folder / "spectrum.vot")).get_first_table()
    units = {field.name: str(field.unit) for field in from_vot.fields}
    from_vot = from_vot.to_table()
    assert len(from_fits) == len(from_vot) == SPECTRUM["nbins"]
    assert from_fits["e_min"][0] == pytest.approx(SPECTRUM["emin"])
    assert from_fits["e_max"][-1] == pytest.approx(SPECTRUM["emax"])
    for table in (from_fits, from_vot):
        assert str(table["e_min"].unit) == "TeV"
        assert table["dnde"].unit.is_equivalent("cm-2 s-1 TeV-1")
        safe = np.asarray(table["safe"], dtype=bool)
        assert not safe[0] and safe[-1]
        assert int(np.sum(table["n_on"][safe])) == fit["n_on"]
        assert int(np.sum(table["n_off"][safe])) == fit["n_off"]
    assert units["e_ref"] == "TeV" and units["n_on"] == "None"
    first = int(np.argmax(np.asarray(from_fits["safe"], dtype=bool)))
    assert np.isfinite(from_fits["dnde"][first]) and from_fits["dnde"][first] > 0
    assert (folder / "spectrum.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("unit", [gammapy_maps, gammapy_spectrum])
@pytest.mark.parametrize("obs_id", ["20136", "99999"])  # indexed but not here; not indexed
def test_an_absent_run_is_named(
    unit: Any, obs_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(manifest_module, "TARGET", tmp_path / "manifest.json")
    with pytest.raises(ValueError, match=rf"{obs_id}.*available: 23523 23526 23559 23592"):
        unit(obs_ids=f"23523 {obs_id}", real_data=str(real_data()))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"datastore": "../.."}, "datastore"),
        ({"datastore": "/"}, "datastore"),
        ({"datastore": "ztf-alerts"}, "datastore"),
        ({"binsz": 0}, "binsz"),
        ({"binsz": -0.1}, "binsz"),
        ({"binsz": float("nan")}, "binsz"),
        ({"nxpix": 5000}, "nxpix"),
        ({"nypix": 0}, "nypix"),
        ({"emin": 10.0, "emax": 1.0}, "emin"),
        ({"emin": 0.0}, "emin"),
        ({"projection": "XYZ"}, "projection"),
        ({"obs_ids": "23523", "nxpix": 10, "nypix": 10}, "exclusion_radius"),  # all excluded
        ({"dec": 91.0}, "dec"),
        ({"obs_ids": "23523 abc"}, "obs_ids"),
        ({"obs_ids": " , "}, "obs_ids"),
        ({"counts_map": "../counts.fits"}, "counts_map"),
        ({"real_data": ""}, "real_data"),
    ],
)
def test_bad_map_parameters(
    parameters: dict[str, Any], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(manifest_module, "TARGET", tmp_path / "manifest.json")
    with pytest.raises(ValueError, match=message):
        gammapy_maps(**{"real_data": str(real_data()), **parameters})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"datastore": "../.."}, "datastore"),
        ({"on_radius": 0.0}, "on_radius"),
        ({"exclusion_radius": -0.1}, "exclusion_radius"),
        ({"nbins": 0}, "nbins"),
        ({"emin": 30.0, "emax": 30.0}, "emin"),
        ({"index_guess": float("inf")}, "index_guess"),
        ({"obs_ids": "33787"}, "obs_ids"),  # PKS 2155-304, far from the Crab
        ({"fit_result": "sub/fit.json"}, "fit_result"),
    ],
)
def test_bad_spectrum_parameters(
    parameters: dict[str, Any], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(manifest_module, "TARGET", tmp_path / "manifest.json")
    with pytest.raises(ValueError, match=message):
        gammapy_spectrum(**{"real_data": str(real_data()), **parameters})
    assert list(tmp_path.iterdir()) == []

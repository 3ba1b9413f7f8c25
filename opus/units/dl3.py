"""What the gammapy units share: the DL3 data store under the real-data folder, the runs a
job asks for, and the manifest entries for every DL3 file and response table they read.

A parameter never names a file: `datastore` is a folder under the real-data folder and
`obs_ids` are runs listed in its index *and* present on disk (the H.E.S.S. DR1 index lists
105 runs; only some of their files may be here). gammapy is imported inside the functions
so that importing a unit to read its signature stays cheap.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from opus.units.manifest import Manifest, safe_under

HDU_INDEX = "hdu-index.fits.gz"
OBS_INDEX = "obs-index.fits.gz"
FITS = "application/fits"
# gammapy's HDU types -> the manifest role of that table
ROLES = {"events": "dl3_events", "gti": "dl3_gti"}
IRFS = ("aeff", "edisp", "psf", "bkg")
MAX_OBS = 100


@dataclass
class Store:
    """An opened data store: the gammapy DataStore, its folder and the real-data root."""

    root: Path
    folder: Path
    datastore: str
    data_store: Any  # gammapy.data.DataStore (gammapy has no type information)
    index_keys: list[str] = field(default_factory=list)

    def available(self) -> list[int]:
        """The runs of the index whose event list is on disk."""
        present = []
        for obs_id in sorted({int(i) for i in self.data_store.hdu_table["OBS_ID"]}):
            location = self.location(obs_id, "events")
            if location is not None and Path(location.path()).is_file():
                present.append(obs_id)
        return present

    def location(self, obs_id: int, hdu_type: str) -> Any:
        """gammapy's HDULocation of one table of a run (None when the index has none)."""
        return self.data_store.hdu_table.hdu_location(
            obs_id=obs_id, hdu_type=hdu_type, warn_missing=False
        )


def parse_obs_ids(text: str | int, name: str = "obs_ids") -> list[int]:
    """Run numbers from a list parameter ("23523 23526" or "23523,23526"), in order, once."""
    parts = [p for p in re.split(r"[\s,;]+", str(text).strip()) if p]
    if not parts:
        raise ValueError(f"{name}: give at least one observation id")
    ids: list[int] = []
    for part in parts:
        if not part.isdigit():
            raise ValueError(f"{name}: {part!r} is not an observation id (a positive integer)")
        if int(part) not in ids:
            ids.append(int(part))
    if len(ids) > MAX_OBS:
        raise ValueError(f"{name}: at most {MAX_OBS} observations, not {len(ids)}")
    return ids


def result_name(value: str, name: str) -> str:
    """A result file name as the server gives it: a plain name in the job's folder."""
    if not value or Path(value).name != value or value in (".", ".."):
        raise ValueError(f"{name}: {value!r} is not a plain file name")
    return value


def finite(
    value: float, name: str, *, low: float | None = None, high: float | None = None
) -> float:
    """A float parameter that is a number, optionally with low < value <= high."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name}: {value!r} is not a finite number")
    if low is not None and not number > low:
        raise ValueError(f"{name}: must be > {low}, not {value!r}")
    if high is not None and not number <= high:
        raise ValueError(f"{name}: must be <= {high}, not {value!r}")
    return number


def check_target(ra: float, dec: float) -> tuple[float, float]:
    ra = finite(ra, "ra")
    if not 0 <= ra < 360:
        raise ValueError(f"ra: must be in [0, 360) degrees, not {ra!r}")
    dec = finite(dec, "dec")
    if not -90 <= dec <= 90:
        raise ValueError(f"dec: must be in [-90, 90] degrees, not {dec!r}")
    return ra, dec


def check_energies(emin: float, emax: float) -> tuple[float, float]:
    emin = finite(emin, "emin", low=0.0)
    emax = finite(emax, "emax", low=0.0, high=1000.0)
    if emin >= emax:
        raise ValueError(f"emin: must be below emax ({emin!r} >= {emax!r} TeV)")
    return emin, emax


def open_store(real_data: str, datastore: str) -> Store:
    """The DL3 data store in folder `datastore` of the real-data folder (never outside)."""
    if not real_data:
        raise ValueError("real_data: the real-data folder is not set")
    root = Path(real_data).resolve()
    try:
        folder = safe_under(root, datastore)
    except ValueError as exc:
        raise ValueError(f"datastore: {exc}") from None
    for index in (HDU_INDEX, OBS_INDEX):
        if not (folder / index).is_file():
            raise ValueError(f"datastore: {datastore!r} is not a DL3 data store (no {index})")
    from gammapy.data import DataStore  # type: ignore[import-untyped, unused-ignore]

    data_store = DataStore.from_dir(
        folder, hdu_table_filename=HDU_INDEX, obs_table_filename=OBS_INDEX
    )
    return Store(root, folder, datastore, data_store)


def observations(store: Store, obs_ids: Sequence[int], irfs: Iterable[str]) -> Any:
    """gammapy Observations of the runs asked for, with the response tables `irfs`; a run
    not present (not indexed, or its file missing) is a ValueError naming it."""
    available = store.available()
    missing = [i for i in obs_ids if i not in available]
    if missing:
        raise ValueError(
            f"obs_ids: {' '.join(map(str, missing))} not present in {store.datastore!r}; "
            f"available: {' '.join(map(str, available))}"
        )
    wanted = list(irfs)
    for obs_id in obs_ids:
        for hdu_type in ("events", "gti", *wanted):
            path = table_path(store, obs_id, hdu_type)
            if not path.is_file():
                raise ValueError(f"obs_ids: run {obs_id} has no {hdu_type} table on disk")
    found = store.data_store.get_observations(list(obs_ids), required_irf=wanted)
    if len(found) != len(obs_ids):
        raise ValueError(f"obs_ids: some of {list(obs_ids)} lack the tables {wanted}")
    return found


def table_path(store: Store, obs_id: int, hdu_type: str) -> Path:
    """The file holding one table of a run; inside the real-data folder, or ValueError."""
    location = store.location(obs_id, hdu_type)
    if location is None:
        raise ValueError(f"obs_ids: run {obs_id} has no {hdu_type} table in the index")
    path = Path(location.path()).resolve()
    if not path.is_relative_to(store.root):
        raise ValueError(f"datastore: the index points run {obs_id} outside the data folder")
    return path


def record(
    manifest: Manifest, store: Store, obs_ids: Sequence[int], irfs: Iterable[str]
) -> dict[int, list[str]]:
    """Write in the manifest each DL3 table read (one entry per file and HDU: events, GTI
    and the response tables `irfs`) and the two index files; returns each run's keys."""
    if not store.index_keys:
        for index, hdu in ((OBS_INDEX, "OBS_INDEX"), (HDU_INDEX, "HDU_INDEX")):
            store.index_keys.append(
                manifest.use(store.folder / index, "dl3_index", content_type=FITS, hdu=hdu)
            )
    keys: dict[int, list[str]] = {}
    for obs_id in obs_ids:
        keys[obs_id] = []
        # events last: a derivation names the file, and the provenance takes the file's
        # last table for it; every result here comes from the events
        for hdu_type in ("gti", *irfs, "events"):
            location = store.location(obs_id, hdu_type)
            key = manifest.use(
                table_path(store, obs_id, hdu_type),
                ROLES.get(hdu_type, "irf"),
                content_type=FITS,
                hdu=str(location.hdu_name).upper(),
            )
            if key not in keys[obs_id]:
                keys[obs_id].append(key)
    return keys


def note_versions(manifest: Manifest, extra: Iterable[str] = ()) -> None:
    """Software versions that shaped the numbers, in the manifest's context."""
    for package in ("gammapy", "numpy", "astropy", "regions", *extra):
        try:
            manifest.context[package] = version(package)
        except PackageNotFoundError:
            manifest.context[package] = "not installed"


def all_keys(keys: dict[int, list[str]]) -> list[str]:
    """Every run's keys, in order, once."""
    return list(dict.fromkeys(k for run in keys.values() for k in run))


def pointing(observation: Any) -> Any:
    """Where a run pointed (ICRS SkyCoord), as gammapy's safe masks see it."""
    return observation.get_pointing_icrs(observation.tmid)

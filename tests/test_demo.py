"""`opus demo`: the science definitions on the real data against a running server, their
results and provenance graphs downloaded; and a clear message where the data is missing."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from astropy.io import fits

from tests.servers import launch, require_shared

# the demo's client side: what the server does for it is tested on both databases
pytestmark = pytest.mark.any_database


def demo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opus.cli", "demo", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def test_the_demo_runs_against_a_server_and_keeps_its_results(tmp_path: Path) -> None:
    data = require_shared("data")
    server = launch(tmp_path / "data", {"OPUS_REAL_DATA": str(data)})
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPUS_")}
        done = demo(
            "--url",
            server.url,
            "--out",
            str(tmp_path / "out"),
            env=env | {"OPUS_REAL_DATA": str(data)},
        )
    finally:
        server.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(": COMPLETED in ") == 3
    folders = {p.name.rsplit("_", 1)[0]: p for p in (tmp_path / "out").iterdir()}
    assert set(folders) == {"ztf_tier_pipeline", "gammapy_maps", "gammapy_spectrum"}
    with (folders["ztf_tier_pipeline"] / "targets.csv").open() as handle:
        targets = list(csv.DictReader(handle))
    assert targets and all(t["objectId"].startswith("ZTF") for t in targets)
    with fits.open(folders["gammapy_maps"] / "counts.fits") as counts:
        assert counts[0].data.sum() > 0 or counts[1].data.sum() > 0
    fit = json.loads((folders["gammapy_spectrum"] / "fit.json").read_text())
    assert "index" in json.dumps(fit)
    for folder in folders.values():
        assert (folder / "provenance.svg").read_text().lstrip().startswith(("<?xml", "<svg"))
        assert str(folder / "provenance.svg") in done.stdout


def test_without_the_data_the_demo_says_how_to_get_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPUS_")}
    done = demo(env=env | {"OPUS_REAL_DATA": str(tmp_path / "nowhere")})
    assert done.returncode == 2
    assert "the real data is not here" in done.stderr
    assert "OPUS_REAL_DATA" in done.stderr and "hess-dl3-dr1" in done.stderr
    assert "Traceback" not in done.stderr

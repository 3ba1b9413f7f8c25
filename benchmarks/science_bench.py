"""The science definitions' speed (issue 12): one JSON object on stdout.

    python benchmarks/science_bench.py [--runs 5]

1. T0 ingest on one process: `t0_ingest_alerts` called in-process on every sample alert
   of the real data folder (tar bundles and single files: 41 alerts),
   `--runs` times, each in a fresh folder; alerts per second of the median run.
2. Reuse: `opus serve` on a fresh data folder (the embedded executor, SQLite); T0 and T1
   of the sample alerts make the states; then, twice each with the same values and
   inputs, t2_bazin_fit on every state and gammapy_maps of one run: the first run of a
   job against the second (reused) one, as round trips from POST to COMPLETED (WAIT
   blocking, no polling); the ratio first / reused (target >= 20).
3. The demo: `opus demo` (it starts its own server) from start to end.
Progress goes to stderr. Client and server share the machine's CPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests, opus

from uws_bench import log, machine

from opus.demo import alert_files
from tests.servers import launch, require_shared


def t0_rate(data: Path, runs: int) -> dict[str, Any]:
    from opus.units import manifest
    from opus.units.alerts import read_alerts, t0_ingest_alerts

    files = alert_files(data)
    count = sum(1 for f in files for _ in read_alerts(str(f)))
    times = []
    here = Path.cwd()
    for run in range(runs):
        with tempfile.TemporaryDirectory() as folder:
            manifest.TARGET = Path(folder) / "manifest.json"
            os.chdir(folder)  # a unit writes into the job's folder, its cwd
            try:
                begin = time.perf_counter()
                t0_ingest_alerts(alerts=[str(f) for f in files])
                times.append(time.perf_counter() - begin)
            finally:
                os.chdir(here)
        log(f"t0 run {run + 1}: {times[-1] * 1000:.0f} ms")
    median = statistics.median(times)
    return {
        "alerts": count,
        "files": len(files),
        "median_ms": round(median * 1000, 1),
        "alerts_per_s": round(count / median, 1),
    }


def _job(
    session: Any, base: str, jobdef: str, data: list[tuple[str, str]], files: Any = None
) -> tuple[str, float]:
    begin = time.perf_counter()
    answer = session.post(
        f"{base}/rest/{jobdef}", data=[("PHASE", "RUN"), *data], files=files, allow_redirects=False
    )
    assert answer.status_code == 303, answer.text
    url = answer.headers["Location"]
    phase = "QUEUED"
    while phase not in ("COMPLETED", "ERROR", "ABORTED"):
        got = session.get(url, params={"WAIT": "30", "PHASE": phase})
        phase = got.text.split("<uws:phase>")[1].split("<")[0]
    elapsed = time.perf_counter() - begin
    assert phase == "COMPLETED", session.get(f"{url}/error").text
    return url, elapsed


def _result_ids(session: Any, url: str, role: str) -> list[str]:
    """The opus: ids of a job's results in a role (for inputs by reference)."""
    doc = session.get(f"{url}/provenance", params={"DEPTH": "0"}).json()
    generated = doc.get("wasGeneratedBy", {}).values()
    return sorted(g["prov:entity"] for g in generated if g.get("prov:role") == role)


def reuse(data: Path) -> dict[str, Any]:
    import requests

    session = requests.Session()
    with tempfile.TemporaryDirectory() as folder:
        server = launch(Path(folder) / "data", {"OPUS_REAL_DATA": str(data)})
        try:
            base = server.url
            files = [("alerts", (p.name, p.read_bytes())) for p in alert_files(data)]
            t0, _ = _job(session, base, "t0_ingest_alerts", [], files)
            points = _result_ids(session, t0, "datapoints")
            t1, _ = _job(session, base, "t1_combine_states", [("datapoints", p) for p in points])
            states = [("states", s) for s in _result_ids(session, t1, "states")]
            found: dict[str, Any] = {"states": len(states)}
            for jobdef, values in (
                ("t2_bazin_fit", [("band", "r"), *states]),
                ("gammapy_maps", [("obs_ids", "23523"), ("nxpix", "100"), ("nypix", "100")]),
            ):
                _, first = _job(session, base, jobdef, values)
                reused_url, again = _job(session, base, jobdef, values)
                comment = session.get(f"{reused_url}/provenance", params={"DEPTH": "0"}).text
                assert "reused the results of" in comment, comment[:500]
                found[jobdef] = {
                    "first_ms": round(first * 1000, 1),
                    "reused_ms": round(again * 1000, 1),
                    "ratio": round(first / again, 1),
                }
                log(f"{jobdef}: first {first * 1000:.0f} ms, reused {again * 1000:.0f} ms")
            return found
        finally:
            server.stop()


def demo() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as out:
        begin = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "opus.cli", "demo", "--out", out],
            capture_output=True,
            text=True,
            timeout=600,
        )
        elapsed = time.perf_counter() - begin
    assert done.returncode == 0, done.stdout + done.stderr
    return {"wall_s": round(elapsed, 1), "target_s": 120}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    data = require_shared("data")
    begin = time.perf_counter()
    report: dict[str, Any] = {"machine": machine()}
    report["t0_ingest"] = t0_rate(data, args.runs)
    report["reuse"] = reuse(data)
    report["demo"] = demo()
    ratios = [v["ratio"] for v in report["reuse"].values() if isinstance(v, dict)]
    report["targets"] = {"reuse_ratio_at_least": 20, "demo_s_at_most": 120}
    report["targets_met"] = {
        "reuse": all(r >= 20 for r in ratios),
        "demo": report["demo"]["wall_s"] <= 120,
    }
    report["elapsed_s"] = round(time.perf_counter() - begin, 1)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

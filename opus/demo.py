"""`opus demo`: the shipped science definitions on the real data, against a running server
(`--url`) or one started for the demo.

It runs the ZTF tier pipeline (T0 -> T1 -> T2 in chunks -> T3) on the sample alerts,
uploaded from the data folder, and the two gammapy analyses on the H.E.S.S. DL3 runs,
which the server reads from its own data folder; shows their progress; and downloads
each result and the provenance graph of each job (PROV-SVG) into `--out`, printing where
they are and their URLs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opus.config import Settings

UWS = "{http://www.ivoa.net/xml/UWS/v1.0}"
XLINK = "{http://www.w3.org/1999/xlink}"
FINAL = ("COMPLETED", "ERROR", "ABORTED")
ALERTS = "ztf-alerts"
DL3 = "hess-dl3-dr1"
HOW_TO_GET_THE_DATA = """\
opus demo: the real data is not here ({where}).
It needs a folder holding
  ztf-alerts/     ZTF Avro alerts (the public samples of the Ampel-ZTF repository:
                  ztf_public_20180819_mod1000.tar.gz, ZTF20abyfpze.avro, ...)
  hess-dl3-dr1/   the H.E.S.S. DL3 DR1 (obs-index.fits.gz, hdu-index.fits.gz and
                  data/hess_dl3_dr1_obs_id_023523.fits.gz ...), from
                  www.mpi-hd.mpg.de/hfm/HESS/pages/dl3-dr1/
  tides/          tidesSelectionFunctions.yml (TiDES selection criteria)
Place it at ../shared/data beside the checkout, or name it with OPUS_REAL_DATA."""


@dataclass
class Demo:
    name: str
    jobdef: str
    data: list[tuple[str, str]]
    files: list[Path] = field(default_factory=list)
    url: str = ""
    phase: str = "PENDING"
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None


def run(url: str | None, out: Path, session: Any) -> int:
    """The demo, its requests sent with `session` (a requests.Session with the caller's
    credentials, as `opus submit` sends them)."""
    settings = Settings()
    data = settings.real_data_dir
    missing = [d for d in (ALERTS, DL3, "tides") if data is None or not (data / d).is_dir()]
    if missing:
        print(HOW_TO_GET_THE_DATA.format(where=f"missing: {', '.join(missing)}"), file=sys.stderr)
        return 2
    assert data is not None
    started = time.monotonic()
    with _server(url, data) as base:
        demos = _demos(data)
        for demo in demos:
            demo.url = _submit(session, base, demo)
            print(f"{demo.name}: {demo.url}")
        _follow(session, demos)
        out.mkdir(parents=True, exist_ok=True)
        failed = 0
        for demo in demos:
            failed += _report(session, base, demo, out)
    print(f"\nthe demo took {time.monotonic() - started:.1f} s; files are in {out}")
    return 1 if failed else 0


def alert_files(data: Path) -> list[Path]:
    """The sample alerts of the data folder: tar bundles and single Avro files."""
    alerts = data / ALERTS
    return sorted([*alerts.glob("*.tar.gz"), *alerts.glob("*.avro"), *alerts.glob("*/*.avro")])


def _demos(data: Path) -> list[Demo]:
    files = alert_files(data)
    return [
        Demo("ZTF tiers (T0 -> T1 -> T2 -> T3)", "ztf_tier_pipeline", [], files),
        Demo(
            "gammapy maps of the Crab",
            "gammapy_maps",
            [("obs_ids", "23523 23526 23559 23592"), ("nxpix", "200"), ("nypix", "200")],
        ),
        Demo("gammapy spectrum of the Crab", "gammapy_spectrum", [("obs_ids", "23523 23526")]),
    ]


def _submit(session: Any, base: str, demo: Demo) -> str:
    data = [("PHASE", "RUN"), *demo.data]
    with contextlib.ExitStack() as stack:
        files = [("alerts", (p.name, stack.enter_context(p.open("rb")))) for p in demo.files]
        answer = session.post(
            f"{base}/rest/{demo.jobdef}", data=data, files=files or None, allow_redirects=False
        )
    if answer.status_code != 303:
        raise SystemExit(f"opus demo: {demo.jobdef}: {answer.status_code} {answer.text.strip()}")
    return str(answer.headers["Location"])


def _follow(session: Any, demos: list[Demo]) -> None:
    """Show each job's phase as it changes (UWS WAIT on each in turn: no polling loop)."""
    tty = sys.stdout.isatty()
    while any(d.phase not in FINAL for d in demos):
        for demo in demos:
            if demo.phase in FINAL:
                continue
            answer = session.get(demo.url, params={"WAIT": "1", "PHASE": demo.phase}, timeout=30)
            answer.raise_for_status()
            phase = ET.fromstring(answer.content).findtext(f"{UWS}phase") or "UNKNOWN"
            if phase != demo.phase and phase in FINAL:
                demo.ended = time.monotonic()
            demo.phase = phase
        line = "  ".join(f"{d.jobdef}: {d.phase}" for d in demos)
        elapsed = time.monotonic() - min(d.started for d in demos)
        print(
            f"\r[{elapsed:6.1f} s] {line}" if tty else f"[{elapsed:6.1f} s] {line}",
            end="" if tty else "\n",
            flush=True,
        )
    if tty:
        print()


def _report(session: Any, base: str, demo: Demo, out: Path) -> int:
    doc = ET.fromstring(session.get(demo.url).content)
    job_id = doc.findtext(f"{UWS}jobId") or "job"
    took = (demo.ended or time.monotonic()) - demo.started
    print(f"\n{demo.name}: {demo.phase} in {took:.1f} s\n  job: {demo.url}")
    if demo.phase != "COMPLETED":
        print(f"  error: {doc.findtext(f'{UWS}errorSummary/{UWS}message')}")
        return 1
    folder = out / f"{demo.jobdef}_{job_id}"
    folder.mkdir(parents=True, exist_ok=True)
    for result in doc.iter(f"{UWS}result"):
        href = result.get(f"{XLINK}href") or ""
        answer = session.get(href)
        target = folder / (
            _file_name(answer.headers.get("Content-Disposition", "")) or Path(href).name
        )
        target.write_bytes(answer.content)
        print(f"  {result.get('id')}: {target}  ({href})")
    graph = f"{demo.url}/provenance?RESPONSEFORMAT=PROV-SVG&DEPTH=ALL"
    answer = session.get(graph)
    if answer.status_code == 200:
        (folder / "provenance.svg").write_bytes(answer.content)
        print(f"  provenance graph: {folder / 'provenance.svg'}  ({graph})")
    print(f"  provenance (PROV-JSON): {demo.url}/provenance?DEPTH=ALL")
    return 0


def _file_name(disposition: str) -> str:
    """The file name a Content-Disposition header gives (a plain name, no folders)."""
    from email.message import Message

    message = Message()
    message["Content-Disposition"] = disposition
    return Path(message.get_filename() or "").name


@contextlib.contextmanager
def _server(url: str | None, data: Path) -> Iterator[str]:
    """The server's base URL: the one given, or one started here on a free port (its data
    folder a temporary one), stopped at the end."""
    if url:
        yield url.rstrip("/")
        return
    with tempfile.TemporaryDirectory(prefix="opus-demo-") as folder:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        # the demo's own server: this environment without its OPUS_ settings
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPUS_")}
        env |= {"OPUS_DATA_DIR": folder, "OPUS_REAL_DATA": str(data)}
        log = Path(folder) / "serve.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "opus.cli", "serve", "--port", str(port)],
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_available(base, process, log)
            print(f"started a server for the demo at {base} (data in a temporary folder)")
            yield base
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)


def _wait_available(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    import requests

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"opus demo: the server did not start:\n{log.read_text()}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{base}/availability", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"opus demo: the server did not answer within 60 s:\n{log.read_text()}")

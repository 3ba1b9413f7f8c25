"""The wheel, installed as a user installs it (not editable, in a fresh virtual environment,
away from the checkout), serves the shipped definitions and runs a job."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from lxml import etree

from opus.phases import FINAL, Phase
from tests.servers import ROOT, TEST_DATABASE, database_url, free_port

UWS = "{http://www.ivoa.net/xml/UWS/v1.0}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        check=True,
        timeout=300,
    )
    (found,) = out.glob("opus_uws-*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel (and the driver the tests' database needs)."""
    home = tmp_path_factory.mktemp("venv")
    venv.create(home, with_pip=True)
    extra = "[postgres]" if TEST_DATABASE else ""
    subprocess.run(
        [
            str(home / "bin" / "pip"),
            "install",
            "-q",
            "--disable-pip-version-check",
            f"{wheel}{extra}",
        ],
        check=True,
        timeout=600,
    )
    return home


def test_the_wheel_holds_the_shipped_definitions(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "opus/job_definitions/hello_vot.xml" in names
    assert not any(n.startswith(("tests/", "job_definitions/")) for n in names)


@contextlib.contextmanager
def serving(home: Path, workdir: Path) -> Iterator[str]:
    data_dir = workdir / "data"
    data_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPUS_", "PYTHON"))}
    env |= {"OPUS_DATA_DIR": str(data_dir), "OPUS_DATABASE_URL": database_url(data_dir)}
    port = free_port()
    log = workdir / "serve.log"
    process = subprocess.Popen(
        [str(home / "bin" / "opus"), "serve", "--port", str(port), "--workers", "1"],
        cwd=workdir,  # nothing may come from the checkout
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            with contextlib.suppress(requests.ConnectionError, requests.Timeout):
                if requests.get(f"{url}/availability", timeout=5).status_code == 200:
                    break
            assert time.monotonic() < end, log.read_text()
            time.sleep(0.2)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


@pytest.mark.timeout(900)
def test_an_installed_wheel_serves_hello_and_runs_it(installed: Path, tmp_path: Path) -> None:
    with serving(installed, tmp_path) as url:
        names = [d["name"] for d in requests.get(f"{url}/jdl", timeout=10).json()["jobdefs"]]
        assert "hello" in names
        created = requests.post(
            f"{url}/rest/hello", data={"PHASE": "RUN", "name": "Ada"}, allow_redirects=False
        )
        assert created.status_code == 303, created.text
        job = created.headers["Location"]
        end = time.monotonic() + 60
        while True:
            doc = etree.fromstring(requests.get(job, params={"WAIT": "5"}, timeout=30).content)
            phase = doc.findtext(f"{UWS}phase")
            if phase in FINAL:
                break
            assert time.monotonic() < end, f"still {phase}"
        assert phase == Phase.COMPLETED, etree.tostring(doc)
        assert "Ada" in requests.get(f"{job}/results/greeting", timeout=10).text
        # the web pages come with the wheel: templates and static files are package data
        home = requests.get(f"{url}/", timeout=10)
        assert home.status_code == 200 and "<h1>Job definitions</h1>" in home.text
        assert requests.get(f"{url}/static/opus.css", timeout=10).status_code == 200
        assert 'id="f-name"' in requests.get(f"{url}/new/hello", timeout=10).text


def test_a_setting_that_needs_a_missing_extra_says_which(installed: Path, tmp_path: Path) -> None:
    """The base install has no Celery: asking for a broker stops at once, naming the extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPUS_", "PYTHON"))}
    env |= {"OPUS_DATA_DIR": str(tmp_path), "OPUS_BROKER_URL": "redis://127.0.0.1:1/0"}
    for command in (["serve", "--port", str(free_port())], ["worker"]):
        done = subprocess.run(
            [str(installed / "bin" / "opus"), *command],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert "pip install 'opus-uws[celery]'" in done.stderr
        assert "Traceback" not in done.stderr

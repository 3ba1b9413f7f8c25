"""The `opus` command line client (submit, jobs) against a real `opus serve`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import requests

from tests.servers import ROOT, Server


def opus(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opus.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_submit_and_wait(server: Server) -> None:
    done = opus("submit", "hello", "name=Ada", "--wait", "--server", server.url)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    job_url = lines[0]
    assert job_url.startswith(server.rest("hello") + "/")
    assert "COMPLETED" in lines
    greeting = [line for line in lines if line.startswith("greeting\t")]
    assert greeting, done.stdout
    href = greeting[0].split("\t", 1)[1]
    assert requests.get(href, timeout=10).content == b"Hello, Ada!\n"
    assert server.phase(job_url) == "COMPLETED"


def test_submit_without_wait_prints_the_job_url(server: Server) -> None:
    done = opus("submit", "hello", "name=Quick", "--server", server.url)
    assert done.returncode == 0, done.stderr
    job_url = done.stdout.strip()
    assert job_url.startswith(server.rest("hello") + "/")
    assert server.wait_final(job_url) is not None


def test_submit_failing_job_exits_1(server: Server) -> None:
    done = opus("submit", "failing", "reason=cli", "--wait", "--server", server.url)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "ERROR" in done.stdout.splitlines()
    assert "cannot work: cli" in done.stderr


def test_submit_bad_parameter_exits_nonzero(server: Server) -> None:
    done = opus("submit", "opus_echo", "text=x", "count=many", "--wait", "--server", server.url)
    assert done.returncode != 0
    assert "count" in done.stderr
    assert "Traceback" not in done.stderr


def test_jobs_lists_the_new_jobs(server: Server) -> None:
    urls = []
    for name in ("One", "Two"):
        done = opus("submit", "hello", f"name={name}", "--server", server.url)
        assert done.returncode == 0, done.stderr
        urls.append(done.stdout.strip())
    listed = opus("jobs", "hello", "--server", server.url)
    assert listed.returncode == 0, listed.stderr
    ids = [line.split("\t")[1] for line in listed.stdout.splitlines()]
    assert all(line.startswith("hello\t") for line in listed.stdout.splitlines())
    for url in urls:
        assert url.rsplit("/", 1)[-1] in ids
    # newest first
    assert ids[:2] == [urls[1].rsplit("/", 1)[-1], urls[0].rsplit("/", 1)[-1]]


def test_submit_uploads_a_file(server: Server, tmp_path: Path) -> None:
    source = tmp_path / "notes.txt"
    source.write_text("from a file\n")
    done = opus(
        "submit", "opus_append", f"input=@{source}", "text=tail", "--wait", "--server", server.url
    )
    assert done.returncode == 0, done.stderr
    output = [line for line in done.stdout.splitlines() if line.startswith("output\t")]
    assert output, done.stdout
    assert requests.get(output[0].split("\t", 1)[1], timeout=10).content == b"from a file\ntail\n"

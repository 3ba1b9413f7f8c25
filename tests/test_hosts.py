"""OPUS across hosts that share nothing but the network: Linux network namespaces made
here (`ip netns`, veth pairs on a bridge of this test's own), one "host" running the web
server and two running `opus worker`, each with a data folder of its own. They reach
PostgreSQL, Redis and the S3 object store only over the bridge's address (PostgreSQL
through a TCP relay on it: the machine's server listens on loopback only).

Jobs complete and their results download from the web host; the lineage crosses jobs
run on different hosts; a worker host cut off mid-job (its veth taken down) loses its
job, which ends in ERROR "worker lost" within 30 s.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
import requests
import sqlalchemy

from tests.servers import IN_CI, POSTGRES, ROOT, TEST_JOBDEFS, Server, free_port, postgres_database
from tests.test_execution import wait_for
from tests.test_object_store import S3

pytestmark = pytest.mark.any_database  # PostgreSQL always: the hosts share it over the network

UWS = "{http://www.ivoa.net/xml/UWS/v1.0}"


def run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


class Relay:
    """A TCP relay: connections to (host, port) go on to `target` (PostgreSQL's loopback)."""

    def __init__(self, host: str, target: tuple[str, int]) -> None:
        self.listener = socket.create_server((host, 0))
        self.port = self.listener.getsockname()[1]
        self.target = target
        self.stopped = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stopped:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _pipe(self, client: socket.socket) -> None:
        with contextlib.suppress(OSError), client, socket.create_connection(self.target) as up:
            selector = selectors.DefaultSelector()
            selector.register(client, selectors.EVENT_READ, up)
            selector.register(up, selectors.EVENT_READ, client)
            while not self.stopped:
                for key, _ in selector.select(1):
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    key.data.sendall(data)

    def stop(self) -> None:
        self.stopped = True
        self.listener.close()


@dataclass
class Network:
    """A bridge on this machine and the namespaces ("hosts") attached to it."""

    tag: str
    subnet: str  # "10.x.y"
    hosts: dict[str, str] = field(default_factory=dict)  # namespace -> address

    @property
    def bridge(self) -> str:
        return f"opbr{self.tag}"

    @property
    def gateway(self) -> str:
        return f"{self.subnet}.1"

    def veth(self, name: str) -> str:
        return f"op{self.tag}{name}"[:15]

    def make(self) -> None:
        run("ip", "link", "add", self.bridge, "type", "bridge")
        run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")

    def add_host(self, name: str) -> str:
        namespace = f"opus{self.tag}{name}"
        address = f"{self.subnet}.{len(self.hosts) + 2}"
        run("ip", "netns", "add", namespace)
        peer = ("peer", "name", "eth0", "netns", namespace)
        run("ip", "link", "add", self.veth(name), "type", "veth", *peer)
        run("ip", "link", "set", self.veth(name), "master", self.bridge, "up")
        inside = ("ip", "netns", "exec", namespace, "ip")
        run(*inside, "addr", "add", f"{address}/24", "dev", "eth0")
        run(*inside, "link", "set", "eth0", "up")
        run(*inside, "link", "set", "lo", "up")
        self.hosts[namespace] = address
        return namespace

    def cut(self, name: str) -> None:
        run("ip", "link", "set", self.veth(name), "down")

    def remove(self) -> None:
        for namespace in self.hosts:
            found = subprocess.run(
                ["ip", "netns", "pids", namespace], capture_output=True, text=True
            ).stdout.split()
            for pid in found:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)


@pytest.fixture
def network() -> Iterator[Network]:
    if not shutil.which("ip"):
        reason = "iproute2's ip is not installed"
    elif os.geteuid() != 0:
        reason = "network namespaces need root"
    else:
        reason = ""
    tag = f"{os.getpid() % 10000:04d}"
    made = Network(tag, f"10.{200 + os.getpid() % 50}.{os.getpid() % 250}")
    if not reason:
        try:
            made.make()
        except subprocess.CalledProcessError as exc:
            made.remove()
            reason = f"no bridge could be made: {exc.stderr.decode().strip()}"
    if reason:
        if IN_CI:
            pytest.fail(f"the multi-host test must run in CI: {reason}")
        pytest.skip(reason)
    try:
        yield made
    finally:
        made.remove()


def spawn(namespace: str, env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["ip", "netns", "exec", namespace, sys.executable, "-m", "opus.cli", *args],
        env=env,
        cwd=ROOT,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def pids_in(namespace: str) -> set[int]:
    out = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


def test_web_and_workers_on_three_hosts(network: Network, tmp_path: Path) -> None:
    gateway = network.gateway
    relay = Relay(gateway, ("127.0.0.1", 5432))
    redis_port = free_port()
    options = {"port": str(redis_port), "bind": gateway, "save": "", "appendonly": "no"}
    options |= {"dir": str(tmp_path), "protected-mode": "no"}  # the bridge is ours
    broker = subprocess.Popen(
        ["redis-server", *(word for k, v in options.items() for word in (f"--{k}", v))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a process group of its own, killed with the others
    )
    s3 = S3(host=gateway)
    database = postgres_database(POSTGRES, tmp_path)
    remote_db = sqlalchemy.make_url(database).set(host=gateway, port=relay.port)
    web_host, first_host, second_host = (network.add_host(n) for n in ("web", "w1", "w2"))
    common = {k: v for k, v in os.environ.items() if not k.startswith("OPUS_")} | s3.env()
    common |= {
        "OPUS_DATABASE_URL": remote_db.render_as_string(hide_password=False),
        "OPUS_BROKER_URL": f"redis://{gateway}:{redis_port}/0",
        "OPUS_JOBDEF_PATH": str(TEST_JOBDEFS),
        "OPUS_ALLOW_ANONYMOUS": "true",  # the bridge is this test's own
    }
    processes: list[subprocess.Popen[bytes]] = [broker]
    try:
        wait_for(lambda: _answers(gateway, redis_port), 10, "the broker")
        web_address = network.hosts[web_host]
        port = free_port()
        web_env = common | {"OPUS_DATA_DIR": str(tmp_path / "web")}
        (tmp_path / "web").mkdir()
        serve = ("serve", "--host", web_address, "--port", str(port), "--workers", "2")
        processes.append(spawn(web_host, web_env, tmp_path / "web.log", *serve))
        url = f"http://{web_address}:{port}"
        server = Server(url, tmp_path / "web", web_env, processes[-1], tmp_path / "web.log")
        wait_for(lambda: _available(server.url), 60, "the web host")
        workers = {}
        for host, name in ((first_host, "w1"), (second_host, "w2")):
            folder = tmp_path / name
            folder.mkdir()
            env = common | {"OPUS_DATA_DIR": str(folder)}
            workers[name] = spawn(
                host, env, tmp_path / f"{name}.log", "worker", "--concurrency", "1"
            )
            processes.append(workers[name])

        # a job on each worker host at once, then one using both results
        first = server.create("blob", megabytes="1", seconds="2")
        second = server.create("blob", megabytes="1", seconds="2")
        for url in (first, second):
            assert server.wait_final(url, timeout=60).findtext(f"{UWS}phase") == "COMPLETED"
        ran_on = {url: _worker_pid(server, url) for url in (first, second)}
        hosts_of = {
            url: next(h for h in (first_host, second_host) if pid in pids_in(h))
            for url, pid in ran_on.items()
        }
        assert set(hosts_of.values()) == {first_host, second_host}
        blobs = [_result_id(server, url) for url in (first, second)]
        joined = server.create("concat", inputs=blobs)  # posts the field twice
        assert server.wait_final(joined, timeout=60).findtext(f"{UWS}phase") == "COMPLETED"
        both = [server.session.get(f"{url}/results/blob").content for url in (first, second)]
        assert server.session.get(f"{joined}/results/all").content == b"".join(both)
        # the lineage of the joined file reaches both jobs, run on two hosts
        walk = {"ID": f"opus:ent_{_result_id(server, joined)}", "DEPTH": "ALL"}
        lineage = server.session.get(
            f"{server.url}/provsap", params={**walk, "RESPONSEFORMAT": "PROV-JSON"}
        )
        assert lineage.status_code == 200, lineage.text
        activities = json.loads(lineage.text)["activity"]
        for url in (first, second):
            assert f"opus:job_{url.rsplit('/', 1)[1]}" in activities

        # a worker host cut off mid-job: its job ends in ERROR "worker lost" within 30 s
        doomed = server.create("blob", megabytes="1", seconds="20")
        wait_for(lambda: server.phase(doomed) == "EXECUTING", 20, "the doomed job to start")
        pid = _worker_pid(server, doomed)
        cut = "w1" if pid in pids_in(first_host) else "w2"
        network.cut(cut)
        start = time.monotonic()
        doc = server.wait_final(doomed, timeout=45)
        assert doc.findtext(f"{UWS}phase") == "ERROR"
        assert "worker lost" in server.session.get(f"{doomed}/error").text
        elapsed = time.monotonic() - start
        print(f"the cut-off host's job ended in ERROR after {elapsed:.1f} s")
        assert elapsed < 30
        # the other host goes on serving
        after = server.create("blob", megabytes="1")
        assert server.wait_final(after, timeout=40).findtext(f"{UWS}phase") == "COMPLETED"
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        relay.stop()
        s3.stop()


def _answers(host: str, port: int) -> bool:
    try:
        return bool(redis.Redis(host=host, port=port, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def _available(url: str) -> bool:
    with contextlib.suppress(requests.RequestException):
        return b"<vosi:available>true" in requests.get(f"{url}/availability", timeout=3).content
    return False


def _worker_pid(server: Server, url: str) -> int:
    """The pid of the worker that ran the job (the server's database URL is the relay's,
    which this side of the bridge reaches too)."""
    worker = server.scalar("SELECT worker FROM jobs WHERE id = :j", {"j": url.rsplit("/", 1)[1]})
    return int(str(worker).rsplit(":", 1)[1])


def _result_id(server: Server, url: str) -> str:
    query = "SELECT id FROM entities WHERE job_id = :j AND origin = 'result'"
    return str(server.scalar(query, {"j": url.rsplit("/", 1)[1]}))

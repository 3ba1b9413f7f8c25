"""docker-compose.yml and the Dockerfile use only commands, options and settings that exist.

No Docker engine runs here, so the file is checked against the code it names: each
`opus` command line parses with the real CLI parser, each OPUS_* variable is a Settings
field, the extras the image installs are declared, and the files it copies exist."""

from __future__ import annotations

import configparser
import re

import yaml

from opus.cli import parser
from opus.config import Settings
from tests.servers import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def test_every_opus_command_parses() -> None:
    commands = [s["command"] for s in SERVICES.values() if s.get("command", [""])[0] == "opus"]
    assert {c[1] for c in commands} == {"serve", "worker", "beat"}
    for command in commands:
        args = parser().parse_args(command[1:])
        assert callable(args.func)


def test_every_setting_exists_and_points_at_its_service() -> None:
    fields = {f"OPUS_{name.upper()}" for name in Settings.model_fields}
    for name, service in SERVICES.items():
        for key in service.get("environment") or {}:
            if key.startswith("OPUS_"):
                assert key in fields, f"{name}: {key} is not a setting"
    environment = SERVICES["web"]["environment"]
    assert "@postgres:5432/" in environment["OPUS_DATABASE_URL"]
    assert environment["OPUS_BROKER_URL"].startswith("redis://redis:")
    assert {"web", "worker", "beat", "redis", "postgres", "minio"} <= set(SERVICES)
    assert environment["OPUS_STORE_URL"].startswith("s3://")
    assert environment["OPUS_S3_ENDPOINT_URL"] == "http://minio:9000"


def test_the_image_installs_what_exists() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    extras = configparser.ConfigParser()
    extras.read(ROOT / "setup.cfg")
    declared = set(extras["options.extras_require"])
    for group in re.findall(r"\[([a-z,]+)\]'", dockerfile):
        assert set(group.split(",")) <= declared
    for source in re.findall(r"^COPY (\S+)", dockerfile, re.MULTILINE):
        assert (ROOT / source).exists(), source

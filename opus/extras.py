"""Optional features and the extras that bring their libraries.

The base install always boots; a setting that asks for a feature whose library is not
installed fails at once with a message naming the extra to install, never later with an
ImportError deep inside a worker.
"""

from __future__ import annotations

import importlib.util

from sqlalchemy.engine import make_url

from opus.config import Settings

EXTRAS = {
    "celery": ("celery", "OPUS_BROKER_URL (Celery workers)"),
    "redis": ("celery", "OPUS_BROKER_URL (Celery workers)"),
    "psycopg": ("postgres", "a PostgreSQL OPUS_DATABASE_URL"),
    "boto3": ("s3", "an s3:// OPUS_STORE_URL (an object store)"),
}


class MissingExtra(RuntimeError):
    """A setting asks for a feature whose library is not installed."""


def require(module: str) -> None:
    """Raise MissingExtra, naming the extra to install, when `module` cannot be imported."""
    if importlib.util.find_spec(module) is None:
        extra, feature = EXTRAS[module]
        raise MissingExtra(
            f"{feature} needs the Python package {module}: pip install 'opus-uws[{extra}]'"
        )


def check(settings: Settings) -> None:
    """Every optional library the settings ask for is installed (else MissingExtra)."""
    if settings.broker_url:
        require("celery")
        require("redis")
    if make_url(settings.db_url).get_driver_name() == "psycopg":
        require("psycopg")
    if settings.store_url:
        require("boto3")

"""`python -m opus.store`: create the database tables of the configured store.

`opus serve` runs this in a process of its own, so that its gunicorn master never
imports a database driver: psycopg picks its way of waiting on the socket when it is
imported, and a choice made before gevent's patching would block every worker's hub.
"""

from __future__ import annotations

from opus.config import Settings
from opus.store.db import Database


def main() -> None:
    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    Database(settings.db_url).create_schema()


if __name__ == "__main__":
    main()

"""`python -m opus.store`: create the database tables of the configured store.

`opus serve` runs this in a process of its own, so that its gunicorn master never
imports a database driver: psycopg picks its way of waiting on the socket when it is
imported, and a choice made before gevent's patching would block every worker's hub.
"""

from __future__ import annotations

import sys

from opus.config import Settings
from opus.extras import MissingExtra, check
from opus.store.db import Database


def main() -> int:
    settings = Settings()
    try:
        check(settings)
    except MissingExtra as exc:
        print(f"opus: {exc}", file=sys.stderr)
        return 2
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    Database(settings.db_url).create_schema()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m opus.store`: create the tables of the configured store if it is empty.

`opus serve` runs this in a process of its own, so that its gunicorn master never
imports a database driver: psycopg picks its way of waiting on the socket when it is
imported, and a choice made before gevent's patching would block every worker's hub.

A database at an older revision of the schema is refused (exit 2), untouched: upgrading
is `opus db upgrade`, run when the operator chooses.
"""

from __future__ import annotations

import sys

from opus.config import Settings
from opus.extras import MissingExtra, check
from opus.store.db import Database
from opus.store.migrate import SchemaError


def main() -> int:
    settings = Settings()
    try:
        check(settings)
    except MissingExtra as exc:
        print(f"opus: {exc}", file=sys.stderr)
        return 2
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.db_url)
    try:
        db.create_schema()
    except SchemaError as exc:
        print(f"opus: {exc}", file=sys.stderr)
        return 2
    finally:
        db.engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())

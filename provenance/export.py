"""Writing provenance to files for archives: one document per activity or entity, and an
index. Activities are read in batches, each document built and written on its own, so a
store of any size is exported in bounded memory. Files leave the server: given its base
URL, their locations are URLs under it (as the server's own documents are)."""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path

from sqlalchemy import Connection, select

from provenance import document, query, store
from provenance.serializers import serialize

__all__ = ["EXTENSIONS", "Reader", "activity_ids", "export"]

EXTENSIONS = {
    "PROV-JSON": ".json",
    "PROV-N": ".provn",
    "PROV-XML": ".provx",
    "PROV-VOTABLE": ".vot.xml",
    "PROV-SVG": ".svg",
}
BATCH = 500

Reader = Callable[[], AbstractContextManager[Connection]]


def activity_ids(
    read: Reader, since: datetime | None = None, allowed: query.Allowed | None = None
) -> Iterator[str]:
    """Ids of the recorded activities, oldest first, read in batches.

    Args:
        read: Opens a connection to the provenance tables (e.g. ``engine.connect``).
        since: Only the activities ended at or after this time; None: all.
        allowed: Only these ids (`provenance.query.Allowed`: a condition on an id column).

    Returns:
        An iterator over the activity ids.
    """
    last: tuple[datetime, str] | None = None
    while True:
        query_ = select(store.activities.c.id, store.activities.c.start_time).order_by(
            store.activities.c.start_time, store.activities.c.id
        )
        if since is not None:
            query_ = query_.where(store.activities.c.end_time >= since)
        if allowed is not None:
            query_ = query_.where(allowed(store.activities.c.id))
        if last is not None:
            query_ = query_.where(
                (store.activities.c.start_time > last[0])
                | ((store.activities.c.start_time == last[0]) & (store.activities.c.id > last[1]))
            )
        with read() as conn:
            rows = conn.execute(query_.limit(BATCH)).all()
        if not rows:
            return
        yield from (row[0] for row in rows)
        last = (rows[-1][1], rows[-1][0])


def export(
    read: Reader,
    items: Iterable[tuple[str, str]],
    folder: Path,
    response_format: str,
    namespaces: Mapping[str, str],
    model: document.Model = "IVOA",
    allowed: query.Allowed | None = None,
    base_url: str | None = None,
) -> int:
    """Write one file per (kind, id), and index.csv (kind, id, file, bytes, sha256).

    Args:
        read: Opens a connection to the provenance tables (e.g. ``engine.connect``).
        items: ``("activity", id)``: the activity with what it used and generated;
            ``("entity", id)``: the entity with its whole lineage.
        folder: Where to write (created if needed).
        response_format: A format of `provenance.serializers.FORMATS`.
        namespaces: Prefix -> URI of the prefixes of the ids.
        model: IVOA or W3C, as in `provenance.document.build`.
        allowed: The ids the reader may see, as in `provenance.query.walk` (None: all):
            an item outside them is left out, a lineage stops at them.
        base_url: The server's base URL: locations kept relative to it are written as
            URLs under it (None: as stored), as in `provenance.document.build`.

    Returns:
        How many files were written (index.csv not counted).
    """
    folder.mkdir(parents=True, exist_ok=True)
    extension = EXTENSIONS[response_format]
    count = 0
    with (folder / "index.csv").open("w", newline="") as index_file:
        index = csv.writer(index_file)
        index.writerow(["kind", "id", "file", "bytes", "sha256"])
        for kind, identifier in items:
            with read() as conn:
                if allowed is not None and not query.known_ids(conn, [identifier], allowed):
                    continue
                if kind == "activity":
                    chosen = query.activity_records(conn, identifier, True, allowed)
                else:
                    chosen = query.select_records(conn, [identifier], None, "BACK", True, allowed)
                doc = document.build(conn, chosen, namespaces, model, base_url)
            body, _ = serialize(doc, response_format)
            name = identifier.replace(":", "_") + extension
            (folder / name).write_bytes(body)
            index.writerow([kind, identifier, name, len(body), hashlib.sha256(body).hexdigest()])
            count += 1
    return count

"""What a page shows of a result without downloading it: a raster image as it is, the
start of a text, the first rows of a CSV or VOTable table, the headers of a FITS file and
a greyscale image of its first image HDU.

Each preview reads a bounded part of the file, so a page stays fast whatever a job wrote;
a file that cannot be read has no preview (never an error page). SVG is not shown inline:
it can carry script."""

from __future__ import annotations

import csv
import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

TEXT_BYTES = 64 * 1024
TEXT_LINES = 200
TABLE_BYTES = 256 * 1024
ROWS = 50
VOTABLE_BYTES = 20 * 1024 * 1024
HDUS = 10
RASTER = {"image/png", "image/jpeg", "image/gif"}
SUFFIXES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".txt": "text/plain",
    ".log": "text/plain",
    ".json": "application/json",
    ".csv": "text/csv",
    ".tsv": "text/tab-separated-values",
    ".vot": "application/x-votable+xml",
    ".votable": "application/x-votable+xml",
    ".fits": "application/fits",
    ".fit": "application/fits",
    ".fz": "application/fits",
    ".fits.gz": "application/fits",
}


@dataclass(frozen=True)
class Preview:
    kind: str  # image | text | table | fits
    text: str = ""
    columns: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()  # (HDU title, its header's cards)
    image: bool = False  # a FITS file with an image `fits_png` draws
    truncated: bool = False
    note: str = ""


def _kind(content_type: str, file_name: str) -> str:
    """The content type that decides the preview: the declared one, else the suffix's."""
    declared = content_type.split(";")[0].strip().lower()
    if declared and declared not in ("application/octet-stream", "application/xml", "text/xml"):
        return "image/fits" if declared == "application/fits" else declared
    name = file_name.lower()
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            found = SUFFIXES[suffix]
            return "image/fits" if found == "application/fits" else found
    return "application/x-votable+xml" if declared in ("application/xml", "text/xml") else ""


def preview(path: Path, content_type: str, file_name: str) -> Preview | None:
    """The preview of a stored file, or None (a kind not shown inline, an unreadable file)."""
    kind = _kind(content_type, file_name)
    try:
        if kind in RASTER:
            return Preview("image")
        if kind in ("text/csv", "text/tab-separated-values"):
            return _table(path, "\t" if kind.endswith("separated-values") else ",")
        if kind == "application/x-votable+xml" or (kind.endswith("+xml") and "votable" in kind):
            return _votable(path)
        if kind in ("image/fits", "application/fits"):
            return _fits(path)
        if (kind.startswith("text/") and kind != "text/html") or kind == "application/json":
            return _text(path)
    except Exception:  # a file a job wrote may be anything: no preview, never an error page
        return None
    return None


def _head(path: Path, size: int) -> tuple[str, bool]:
    with path.open("rb") as f:
        data = f.read(size + 1)
    return data[:size].decode("utf-8", errors="replace"), len(data) > size


def _text(path: Path) -> Preview:
    text, cut = _head(path, TEXT_BYTES)
    lines = text.splitlines()
    cut = cut or len(lines) > TEXT_LINES
    note = f"the first {min(len(lines), TEXT_LINES)} lines" if cut else ""
    return Preview("text", text="\n".join(lines[:TEXT_LINES]), truncated=cut, note=note)


def _table(path: Path, delimiter: str) -> Preview | None:
    text, cut = _head(path, TABLE_BYTES)
    rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    if cut and rows:
        rows = rows[:-1]  # the last line may be cut in the middle
    if not rows:
        return None
    body = rows[1 : ROWS + 1]
    cut = cut or len(rows) - 1 > ROWS
    note = f"the first {len(body)} rows" if cut else f"{len(body)} rows"
    return Preview(
        "table",
        columns=tuple(rows[0]),
        rows=tuple(tuple(r) for r in body),
        truncated=cut,
        note=note,
    )


def _votable(path: Path) -> Preview | None:
    if path.stat().st_size > VOTABLE_BYTES:
        return None
    from astropy.io.votable import parse  # type: ignore[import-untyped, unused-ignore]

    table = parse(str(path), verify="ignore").get_first_table()
    data = table.array
    names = tuple(str(f.name) for f in table.fields)
    shown = data[:ROWS]
    rows = tuple(
        tuple("" if np.ma.is_masked(row[name]) else str(row[name]) for name in names)
        for row in shown
    )
    cut = len(data) > ROWS
    note = f"the first {ROWS} of {len(data):,} rows" if cut else f"{len(data):,} rows"
    return Preview("table", columns=names, rows=rows, truncated=cut, note=note)


def _fits(path: Path) -> Preview | None:
    from astropy.io import fits  # type: ignore[import-untyped, unused-ignore]

    headers = []
    image = False
    with fits.open(path, memmap=True, lazy_load_hdus=True) as hdus:
        for number, hdu in enumerate(hdus):
            if number >= HDUS:
                break
            headers.append((_title(number, hdu), hdu.header.tostring(sep="\n").rstrip()))
            image = image or _is_image(hdu)
        more = len(hdus) > HDUS
    note = f"the headers of the first {HDUS} HDUs" if more else ""
    return Preview("fits", headers=tuple(headers), image=image, truncated=more, note=note)


def _title(number: int, hdu: Any) -> str:
    header = hdu.header
    name = hdu.name or ("PRIMARY" if number == 0 else "")
    if header.get("XTENSION", "").strip() == "BINTABLE":
        columns, rows = header.get("TFIELDS", 0), header.get("NAXIS2", 0)
        return f"{number} {name} (table: {columns} columns, {rows:,} rows)"
    axes = [header.get(f"NAXIS{i}", 0) for i in range(1, int(header.get("NAXIS", 0)) + 1)]
    shape = " x ".join(map(str, axes)) if axes else "no data"
    return f"{number} {name} ({shape})"


def _is_image(hdu: Any) -> bool:
    header = hdu.header
    is_table = header.get("XTENSION", "").strip() in ("BINTABLE", "TABLE")
    axes = [int(header.get(f"NAXIS{i}", 0)) for i in range(1, int(header.get("NAXIS", 0)) + 1)]
    return not is_table and sum(1 for n in axes if n > 1) >= 2


def fits_png(path: Path, max_side: int = 512) -> bytes | None:
    """An 8-bit greyscale PNG of the first image HDU (the first plane of a cube), north
    up (row 0 of the array at the bottom), stretched for the eye (zscale, asinh)."""
    try:
        from astropy.io import fits  # type: ignore[import-untyped, unused-ignore]
        from astropy.visualization import (  # type: ignore[import-untyped, unused-ignore]
            AsinhStretch,
            ZScaleInterval,
        )

        with fits.open(path, memmap=True, lazy_load_hdus=True) as hdus:
            found = next((h for h in hdus if _is_image(h)), None)
            if found is None:
                return None
            data = np.asarray(found.data, dtype=float)
        while data.ndim > 2:
            data = data[0]
        step = max(1, int(np.ceil(max(data.shape) / max_side)))
        data = data[::step, ::step]
        finite = np.isfinite(data)
        if not finite.any():
            return None
        filled = np.where(finite, data, np.nanmin(data[finite]))
        scaled = AsinhStretch()(ZScaleInterval()(filled, clip=True))
        grey = (np.clip(scaled, 0, 1) * 255).astype(np.uint8)[::-1]
        return _png(grey)
    except Exception:  # as for previews: an unreadable file has no image
        return None


def _png(grey: np.ndarray[Any, Any]) -> bytes:
    """An 8-bit greyscale image as PNG (filter 0 on each row)."""
    height, width = grey.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    rows = b"".join(b"\x00" + grey[y].tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 6))
        + chunk(b"IEND", b"")
    )

"""What the pages preview of a result (opus.web.previews, no server): tables, texts, FITS
headers and images from real files, bounded reads, and no preview, never an error, for a
file that cannot be read."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from PIL import Image

from opus.web.previews import ROWS, fits_png, preview
from tests.servers import require_shared


def test_a_votable_shows_its_first_rows(tmp_path: Path) -> None:
    path = tmp_path / "t.vot"
    Table({"obs_id": np.arange(80), "flux": np.linspace(0, 1, 80)}).write(path, format="votable")
    shown = preview(path, "application/x-votable+xml", "t.vot")
    assert shown is not None and shown.kind == "table"
    assert shown.columns == ("obs_id", "flux")
    assert len(shown.rows) == ROWS and shown.rows[3][0] == "3" and shown.truncated
    assert "80" in shown.note


def test_a_csv_and_a_text(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    table.write_text("name,mag\nZTF18abxhyqv,18.2\nZTF20abyfpze,19.1\n")
    shown = preview(table, "application/octet-stream", "t.csv")  # known by its suffix
    assert shown is not None and shown.columns == ("name", "mag")
    assert shown.rows == (("ZTF18abxhyqv", "18.2"), ("ZTF20abyfpze", "19.1"))
    assert not shown.truncated
    text = tmp_path / "log.txt"
    text.write_text("".join(f"line {i}\n" for i in range(500)))
    shown = preview(text, "text/plain", "log.txt")
    assert shown is not None and shown.kind == "text" and shown.truncated
    assert shown.text.splitlines()[-1] == "line 199"


def map_file(tmp_path: Path, cube: bool = False) -> Path:
    y, x = np.mgrid[0:300, 0:400]
    data = np.exp(-((x - 300) ** 2 + (y - 60) ** 2) / 200.0) * 100 + 1.0
    data[:5, :5] = np.nan
    path = tmp_path / ("cube.fits" if cube else "map.fits")
    fits.PrimaryHDU(np.stack([data, data * 0]) if cube else data).writeto(path)
    return path


def test_a_fits_map_has_its_headers_and_an_image(tmp_path: Path) -> None:
    path = map_file(tmp_path)
    shown = preview(path, "application/fits", "map.fits")
    assert shown is not None and shown.kind == "fits" and shown.image
    title, cards = shown.headers[0]
    assert title == "0 PRIMARY (400 x 300)" and "NAXIS1  =                  400" in cards
    png = fits_png(path, max_side=128)
    assert png is not None
    image = np.asarray(Image.open(io.BytesIO(png)))
    assert max(image.shape) <= 128 and image.dtype == np.uint8
    # the blob (array row 60, column 300) is near the bottom right: north up
    rows, columns = image.shape
    bright = np.unravel_index(np.argmax(image), image.shape)
    assert bright[0] > rows / 2 and bright[1] > columns / 2, bright
    assert image.max() > image.min()


def test_a_cube_shows_its_first_plane(tmp_path: Path) -> None:
    png = fits_png(map_file(tmp_path, cube=True))
    assert png is not None and np.asarray(Image.open(io.BytesIO(png))).max() > 0


def test_an_event_list_has_headers_and_no_image() -> None:
    data = require_shared("data")
    events = sorted((data / "hess-dl3-dr1" / "data").glob("*.fits.gz"))[0]
    shown = preview(events, "application/octet-stream", events.name)
    assert shown is not None and shown.kind == "fits" and not shown.image
    titles = [t for t, _ in shown.headers]
    assert any("EVENTS (table:" in t for t in titles), titles
    assert any("TELESCOP" in cards for _, cards in shown.headers)
    assert fits_png(events) is None


@pytest.mark.parametrize(
    ("name", "content_type", "body"),
    [
        ("broken.fits", "application/fits", b"SIMPLE  =                    T" + b" " * 10),
        ("bad.vot", "application/x-votable+xml", b"<VOTABLE><RESOURCE><TABLE><FIELD"),
        ("drawing.svg", "image/svg+xml", b"<svg onload='alert(1)'/>"),
        ("data.bin", "application/octet-stream", b"\x00\x01"),
    ],
)
def test_no_preview_for_what_cannot_or_must_not_be_shown(
    tmp_path: Path, name: str, content_type: str, body: bytes
) -> None:
    path = tmp_path / name
    path.write_bytes(body)
    assert preview(path, content_type, name) is None
    assert fits_png(path) is None

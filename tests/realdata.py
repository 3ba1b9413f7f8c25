"""Where the real data of the science definitions' tests is (`../shared/data` beside the
checkout, or OPUS_REAL_DATA): missing, the tests that need it skip, and fail in CI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def real_data() -> Path:
    folder = Path(os.environ.get("OPUS_REAL_DATA") or ROOT.parent / "shared" / "data")
    if not (folder / "ztf-alerts").is_dir() or not (folder / "hess-dl3-dr1").is_dir():
        message = f"the real data folder is missing ({folder}): set OPUS_REAL_DATA"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return folder

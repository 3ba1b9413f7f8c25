"""Python callables used by the test job definitions (run in the job's own process)."""

import json
from pathlib import Path


def square(x: int, label: str, square: str) -> None:
    Path(square).write_text(f"{label} {x * x} {type(x).__name__}\n")


def rights(label: str, granted: str, data_rights: list[str]) -> None:
    """Writes the data rights of the job's owner, which the runner passes as a keyword."""
    Path(granted).write_text(json.dumps({"label": label, "data_rights": data_rights}) + "\n")

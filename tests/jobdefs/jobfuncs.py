"""Python callables used by the test job definitions (run in the job's own process)."""

import json
from pathlib import Path


def square(x: int, label: str, square: str) -> None:
    Path(square).write_text(f"{label} {x * x} {type(x).__name__}\n")


def rights(label: str, granted: str, data_rights: list[str]) -> None:
    """Writes the data rights of the job's owner, which the runner passes as a keyword."""
    Path(granted).write_text(json.dumps({"label": label, "data_rights": data_rights}) + "\n")


def count_lines(parts: list[str], counts: str) -> None:
    """One CSV row per input file (its name and lines); a file saying "fail" fails the job."""
    rows = ["name,lines"]
    for name in parts:
        text = Path(name).read_text()
        if text.strip() == "fail":
            raise SystemExit(f"{name} says fail")
        rows.append(f"{name},{len(text.splitlines())}")
    Path(counts).write_text("\n".join(rows) + "\n")

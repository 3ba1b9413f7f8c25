"""Python callables used by the test job definitions (run in the job's own process)."""

from pathlib import Path


def square(x: int, label: str, square: str) -> None:
    Path(square).write_text(f"{label} {x * x} {type(x).__name__}\n")

"""Server-side checking of parameter values against their definition."""

from __future__ import annotations

import math
from datetime import datetime

from opus.errors import ParameterError
from opus.jobdefs.model import ParameterDef
from opus.timeutil import parse_datetime

TRUE_WORDS = {"true", "t", "yes", "y", "1", "on"}
FALSE_WORDS = {"false", "f", "no", "n", "0", "off"}


def _number(pdef: ParameterDef, raw: str) -> int | float:
    text = raw.strip()
    try:
        if pdef.kind == "integer":
            return int(text)
        value = float(text)
    except ValueError:
        expected = "an integer" if pdef.kind == "integer" else "a number"
        raise ParameterError(pdef.name, f"{raw!r} is not {expected}") from None
    if not math.isfinite(value):
        raise ParameterError(pdef.name, f"{raw!r} is not a finite number")
    return value


def parse_boolean(raw: str) -> bool:
    """true/false, yes/no, on/off, 1/0 (any case) as a bool; ValueError for anything else."""
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"{raw!r} is not a boolean (true or false)")


def _typed(pdef: ParameterDef, raw: str) -> int | float | bool | datetime | str:
    if pdef.kind in ("integer", "real"):
        return _number(pdef, raw)
    if pdef.kind == "boolean":
        try:
            return parse_boolean(raw)
        except ValueError as exc:
            raise ParameterError(pdef.name, str(exc)) from None
    if pdef.kind == "datetime":
        try:
            return parse_datetime(raw)
        except ValueError as exc:
            raise ParameterError(pdef.name, str(exc)) from None
    return raw


def _canonical(value: int | float | bool | datetime | str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds").replace("+00:00", "") + "Z"
    return str(value)


def check_value(pdef: ParameterDef, raw: str) -> str:
    """The value as it will be stored and given to the job, or ParameterError saying why not."""
    if "\x00" in raw:
        raise ParameterError(pdef.name, "the value contains a NUL character")
    if len(raw) > 65536:
        raise ParameterError(pdef.name, "the value is longer than 65536 characters")
    value = _typed(pdef, raw)
    if pdef.options:
        allowed = [_canonical(_typed(pdef, o)) for o in pdef.options]
        if _canonical(value) not in allowed:
            raise ParameterError(pdef.name, f"{raw!r} is not one of {', '.join(allowed)}")
    if not isinstance(value, bool) and isinstance(value, int | float | datetime):
        if pdef.min is not None and value < _typed(pdef, pdef.min):  # type: ignore[operator]
            raise ParameterError(pdef.name, f"{raw} is below the minimum {pdef.min}")
        if pdef.max is not None and value > _typed(pdef, pdef.max):  # type: ignore[operator]
            raise ParameterError(pdef.name, f"{raw} is above the maximum {pdef.max}")
    return raw if pdef.kind == "string" else _canonical(value)


def python_value(pdef: ParameterDef, text: str) -> int | float | bool | str:
    """A stored value as a callable's keyword argument: numbers and booleans typed, dates
    and strings as text (they travel as JSON)."""
    if pdef.kind in ("integer", "real", "boolean"):
        value = _typed(pdef, text)
        assert isinstance(value, int | float | bool)
        return value
    return text

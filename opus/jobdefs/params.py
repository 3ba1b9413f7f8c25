"""Server-side checking of parameter values against their definition."""

from __future__ import annotations

import math
import re
from datetime import datetime

from opus.errors import ParameterError
from opus.jobdefs.model import ParameterDef
from opus.timeutil import parse_datetime

TRUE_WORDS = {"true", "t", "yes", "y", "1", "on"}
FALSE_WORDS = {"false", "f", "no", "n", "0", "off"}
# What XML 1.0 cannot hold (its Char production): a value is shown in UWS and PROV documents
NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def check_text(name: str, raw: str) -> None:
    """ParameterError unless `raw` is text an XML 1.0 document can hold (no NUL, no control
    characters but tab, CR and LF, no surrogates, no U+FFFE or U+FFFF)."""
    found = NOT_XML.search(raw)
    if found is None:
        return
    char = found.group()
    if char == "\x00":
        raise ParameterError(name, "the value contains a NUL character")
    raise ParameterError(
        name, f"the value contains the character U+{ord(char):04X}, which XML cannot hold"
    )


def xml_safe(text: str) -> str:
    """`text` with every character XML 1.0 cannot hold replaced by U+FFFD."""
    return NOT_XML.sub("\ufffd", text)


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


def whole_number(text: str, most: int) -> int | None:
    """`text` as a whole number from 0 to `most`, else None. ASCII digits only: int() also
    reads other scripts' digits, and thousands of them take a while to convert."""
    digits = text.strip()
    if not (digits.isascii() and digits.isdigit() and len(digits) < 20):
        return None
    number = int(digits)
    return number if number <= most else None


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
    check_text(pdef.name, raw)
    if len(raw) > 65536:
        raise ParameterError(pdef.name, "the value is longer than 65536 characters")
    value = _typed(pdef, raw)
    if isinstance(value, datetime):  # compared as it is stored: to the millisecond
        value = value.replace(microsecond=value.microsecond // 1000 * 1000)
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


def check_definition(pdef: ParameterDef) -> None:
    """ParameterError unless what a definition declares of a parameter holds together:
    MIN, MAX and each OPTION values of its kind, MIN not above MAX, the default a value
    the parameter accepts."""
    declared = [("MIN", pdef.min), ("MAX", pdef.max), *(("OPTION", o) for o in pdef.options)]
    for what, raw in declared:
        if raw is None:
            continue
        try:
            check_text(pdef.name, raw)
            _typed(pdef, raw)
        except ParameterError as exc:
            raise ParameterError(pdef.name, f"{what}: {exc.reason}") from None
    if pdef.min is not None and pdef.max is not None and pdef.kind != "string":
        low, high = _typed(pdef, pdef.min), _typed(pdef, pdef.max)
        if not isinstance(low, bool) and low > high:  # type: ignore[operator]
            raise ParameterError(pdef.name, f"MIN {pdef.min} is above MAX {pdef.max}")
    if pdef.default is not None:
        try:
            check_value(pdef, pdef.default)
        except ParameterError as exc:
            raise ParameterError(pdef.name, f"default: {exc.reason}") from None

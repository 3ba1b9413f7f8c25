"""Identifiers of jobs and entities: short, random, URL- and NCName-safe after a prefix."""

from __future__ import annotations

import re
import secrets

ID_PATTERN = re.compile(r"^[a-z0-9]{16}$")


def new_id() -> str:
    return secrets.token_hex(8)


def is_id(text: str) -> bool:
    return bool(ID_PATTERN.match(text))

"""Who is asking. Identities (users, tokens, groups) arrive with their own issue; until
then every request is anonymous, and OPUS_ALLOW_ANONYMOUS=false refuses them with 401.
"""

from __future__ import annotations

from typing import Any

from opus.config import Settings
from opus.errors import Unauthorized


def owner_of(environ: dict[str, Any], settings: Settings) -> str | None:
    """The owner to record for a request: None for an anonymous one (UWS ownerId nil)."""
    if not settings.allow_anonymous:
        raise Unauthorized("this server does not accept anonymous requests")
    return None

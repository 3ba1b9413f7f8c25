"""VOSI availability and capabilities for the whole service."""

from __future__ import annotations

from xml.sax.saxutils import escape

AVAILABILITY_NS = "http://www.ivoa.net/xml/VOSIAvailability/v1.0"
CAPABILITIES_NS = "http://www.ivoa.net/xml/VOSICapabilities/v1.0"


def availability(available: bool, notes: list[str]) -> bytes:
    body = "".join(f"<vosi:note>{escape(n)}</vosi:note>" for n in notes)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<vosi:availability xmlns:vosi="{AVAILABILITY_NS}">'
        f"<vosi:available>{'true' if available else 'false'}</vosi:available>{body}"
        "</vosi:availability>"
    ).encode()


PROVSAP = "ivo://ivoa.net/std/ProvSAP"


def capabilities(base: str, jobdefs: list[str]) -> bytes:
    def capability(standard_id: str | None, url: str, interface: str = "vs:ParamHTTP") -> str:
        standard = f' standardID="{escape(standard_id)}"' if standard_id else ""
        return (
            f'<capability{standard}><interface xsi:type="{interface}">'
            f'<accessURL use="full">{escape(url)}</accessURL></interface></capability>'
        )

    parts = [
        capability("ivo://ivoa.net/std/VOSI#capabilities", f"{base}/capabilities"),
        capability("ivo://ivoa.net/std/VOSI#availability", f"{base}/availability"),
    ]
    parts.append(capability(PROVSAP, f"{base}/provsap"))
    parts += [capability(None, f"{base}/rest/{name}") for name in jobdefs]
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<vosi:capabilities xmlns:vosi="{CAPABILITIES_NS}"'
        ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
        ' xmlns:vr="http://www.ivoa.net/xml/VOResource/v1.0"'
        ' xmlns:vs="http://www.ivoa.net/xml/VODataService/v1.1">'
        + "".join(parts)
        + "</vosi:capabilities>"
    ).encode()

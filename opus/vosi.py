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
# IVOA SSO security methods: HTTP Basic (user:token) and a bearer token
BASIC_AA = "ivo://ivoa.net/sso#BasicAA"
TOKEN = "ivo://ivoa.net/sso#token"


def security_methods(anonymous: bool, bearer: bool = True) -> str:
    """The securityMethod elements of a secured interface."""
    return ("<securityMethod/>" if anonymous else "") + "".join(
        f'<securityMethod standardID="{m}"/>' for m in (BASIC_AA, TOKEN) if bearer or m != TOKEN
    )


def capabilities(base: str, jobdefs: list[str], anonymous: bool) -> bytes:
    """The service's capabilities, each interface listing its security methods (IVOA SSO):
    an anonymous one (a securityMethod without standardID) where anonymous access is on,
    HTTP Basic and bearer tokens always; VOSI itself is open to all."""
    methods = security_methods(anonymous)

    def capability(standard_id: str | None, url: str, secured: bool = True) -> str:
        # A secured interface's URL is a base: the job URLs, their sub-resources and the
        # queries lie below it, and clients (pyvo's AuthSession) send the credentials of
        # a "full" URL to that exact URL only. VOSI's own URLs are used as they are.
        standard = f' standardID="{escape(standard_id)}"' if standard_id else ""
        use = "base" if secured else "full"
        return (
            f'<capability{standard}><interface xsi:type="vs:ParamHTTP">'
            f'<accessURL use="{use}">{escape(url)}</accessURL>{methods if secured else ""}'
            "</interface></capability>"
        )

    parts = [
        capability("ivo://ivoa.net/std/VOSI#capabilities", f"{base}/capabilities", False),
        capability("ivo://ivoa.net/std/VOSI#availability", f"{base}/availability", False),
    ]
    parts.append(capability(PROVSAP, f"{base}/provsap"))
    parts.append(capability("ivo://ivoa.net/std/TAP", f"{base}/tap"))
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

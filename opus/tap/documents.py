"""The TAP service's own documents: VOSI capabilities (TAP 1.1 with TAPRegExt), VOSI
tables (1.1, detail min or max), the DALI examples page; all written from
`opus.tap.schema` and the settings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from opus import vosi
from opus.config import Settings
from opus.tap.schema import KEYS, PROVDM, SCHEMAS, TABLES, TapColumn, TapTable

TAP = "ivo://ivoa.net/std/TAP"
TR = "ivo://ivoa.net/std/TAPRegExt"
ADQL = "ivo://ivoa.net/std/ADQL"
UDF = f"{TR}#features-udf"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
VS = "http://www.ivoa.net/xml/VODataService/v1.1"
TABLES_NS = "http://www.ivoa.net/xml/VOSITables/v1.0"

OUTPUT_FORMATS = (  # (TAPRegExt id, media type, aliases)
    (
        f"{TR}#output-votable-binary2",
        "application/x-votable+xml;serialization=BINARY2",
        ("votable", "votable/b2"),
    ),
    (
        f"{TR}#output-votable-td",
        "application/x-votable+xml;serialization=TABLEDATA",
        ("votable/td",),
    ),
    (None, "text/csv;header=present", ("csv",)),
    (None, "text/tab-separated-values", ("tsv",)),
    (None, "application/json", ("json",)),
)

LINEAGE_FUNCTIONS = (
    (
        "find_prov_precursors(id VARCHAR, max_depth INTEGER) -> TABLE",
        "The precursors of an entity or activity (given by its URI): a table of "
        "(origin, id, node_type, depth, relation), one row per node reached walking back "
        "through wasGeneratedBy and used, at most max_depth hops; use it in FROM: "
        "SELECT * FROM find_prov_precursors('<uri>', 10) AS p",
    ),
    (
        "find_prov_descendants(id VARCHAR, max_depth INTEGER) -> TABLE",
        "The descendants of an entity or activity: as find_prov_precursors, walking forth "
        "through used and wasGeneratedBy",
    ),
)

ADQL_FEATURES = (  # (feature type, forms)
    (f"{TR}#features-adql-string", ("LOWER", "UPPER", "ILIKE")),
    (f"{TR}#features-adql-sets", ("UNION", "EXCEPT", "INTERSECT")),
    (f"{TR}#features-adql-common-table", ("WITH",)),
    (f"{TR}#features-adql-type", ("CAST",)),
    (f"{TR}#features-adql-offset", ("OFFSET",)),
)


def capabilities(base: str, settings: Settings, anonymous: bool, retention_days: float) -> bytes:
    """/tap/capabilities: TAP 1.1 (TAPRegExt) and the VOSI and DALI endpoints."""
    tap = f"{base}/tap"
    # HTTP Basic (user:token); bearer tokens work as well, but SSO 2.0 has no standardID
    # for them that TAP validators know
    methods = vosi.security_methods(anonymous, bearer=False)
    features = "".join(
        f'<languageFeatures type="{kind}">'
        + "".join(f"<feature><form>{escape(f)}</form></feature>" for f in forms)
        + "</languageFeatures>"
        for kind, forms in ADQL_FEATURES
    )
    udfs = (
        f'<languageFeatures type="{UDF}">'
        + "".join(
            f"<feature><form>{escape(form)}</form><description>{escape(text)}</description></feature>"
            for form, text in LINEAGE_FUNCTIONS
        )
        + "</languageFeatures>"
    )
    formats = "".join(
        "<outputFormat" + (f' ivo-id="{ivo_id}"' if ivo_id else "") + ">"
        f"<mime>{escape(mime)}</mime>"
        + "".join(f"<alias>{a}</alias>" for a in aliases)
        + "</outputFormat>"
        for ivo_id, mime, aliases in OUTPUT_FORMATS
    )
    retention = int(retention_days * 86400)
    hard_retention = int(settings.max_destruction_days * 86400)
    duration = settings.max_execution_duration
    tap_capability = (
        f'<capability standardID="{TAP}" xsi:type="tr:TableAccess">'
        f'<interface xsi:type="vs:ParamHTTP" role="std" version="1.1">'
        f'<accessURL use="base">{escape(tap)}</accessURL>{methods}</interface>'
        f'<dataModel ivo-id="{PROVDM}#1.0">IVOA Provenance Data Model 1.0</dataModel>'
        "<language><name>ADQL</name>"
        f'<version ivo-id="{ADQL}#v2.0">2.0</version>'
        f'<version ivo-id="{ADQL}#v2.1">2.1</version>'
        "<description>ADQL 2.1 without geometry, with the lineage functions</description>"
        f"{features}{udfs}</language>"
        f"{formats}"
        f'<uploadMethod ivo-id="{TR}#upload-inline"/>'
        f'<uploadMethod ivo-id="{TR}#upload-http"/>'
        f'<uploadMethod ivo-id="{TR}#upload-https"/>'
        f"<retentionPeriod><default>{retention}</default><hard>{hard_retention}</hard></retentionPeriod>"
        f"<executionDuration><default>{duration}</default><hard>{duration}</hard></executionDuration>"
        f'<outputLimit><default unit="row">{settings.tap_maxrec}</default>'
        f'<hard unit="row">{settings.tap_hard_maxrec}</hard></outputLimit>'
        f'<uploadLimit><default unit="byte">{settings.tap_upload_max_bytes}</default>'
        f'<hard unit="byte">{settings.tap_upload_max_bytes}</hard></uploadLimit>'
        "</capability>"
    )

    def open_capability(standard: str, url: str) -> str:
        return (
            f'<capability standardID="{standard}"><interface xsi:type="vs:ParamHTTP">'
            f'<accessURL use="full">{escape(url)}</accessURL></interface></capability>'
        )

    parts = [
        tap_capability,
        open_capability("ivo://ivoa.net/std/VOSI#capabilities", f"{tap}/capabilities"),
        open_capability("ivo://ivoa.net/std/VOSI#availability", f"{tap}/availability"),
        open_capability("ivo://ivoa.net/std/VOSI#tables-1.1", f"{tap}/tables"),
        open_capability("ivo://ivoa.net/std/DALI#examples", f"{tap}/examples"),
    ]
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<vosi:capabilities xmlns:vosi="{vosi.CAPABILITIES_NS}" xmlns:xsi="{XSI}"'
        ' xmlns:vr="http://www.ivoa.net/xml/VOResource/v1.0"'
        f' xmlns:vs="{VS}" xmlns:tr="http://www.ivoa.net/xml/TAPRegExt/v1.0">'
        + "".join(parts)
        + "</vosi:capabilities>"
    ).encode()


def _optional(tag: str, value: str | None) -> str:
    return f"<{tag}>{escape(value)}</{tag}>" if value else ""


def _column(column: TapColumn) -> str:
    arraysize = f" arraysize={quoteattr(column.arraysize)}" if column.arraysize else ""
    xtype = f" extendedType={quoteattr(column.xtype)}" if column.xtype else ""
    flags = "".join(
        f"<flag>{name}</flag>"
        for name, on in (
            ("indexed", column.indexed),
            ("principal", column.principal),
            ("std", column.std),
        )
        if on
    )
    return (
        f"<column><name>{escape(column.name)}</name>"
        f"{_optional('description', column.description)}{_optional('unit', column.unit)}"
        f"{_optional('ucd', column.ucd)}{_optional('utype', column.utype)}"
        f'<dataType xsi:type="vs:VOTableType"{arraysize}{xtype}>{column.datatype}</dataType>'
        f"{flags}</column>"
    )


def _table(table: TapTable, detail: str) -> str:
    body = ""
    if detail == "max":
        body = "".join(_column(c) for c in table.columns) + "".join(
            "<foreignKey>"
            f"<targetTable>{escape(k.target_table)}</targetTable>"
            + "".join(
                f"<fkColumn><fromColumn>{escape(f)}</fromColumn><targetColumn>{escape(t)}</targetColumn></fkColumn>"
                for f, t in k.columns
            )
            + f"{_optional('description', k.description)}</foreignKey>"
            for k in KEYS
            if k.from_table == table.qualified
        )
    kind = "view" if table.source else "table"
    return (
        f'<table type="{kind}"><name>{escape(table.qualified)}</name>'
        f"{_optional('description', table.description)}{_optional('utype', table.utype)}"
        f"{body}</table>"
    )


def tableset(detail: str) -> bytes:
    """/tap/tables (VOSI 1.1): `detail` max lists columns and keys, min the tables only."""
    schemas = "".join(
        f"<schema><name>{name}</name>{_optional('description', description)}"
        + _optional("utype", utype)
        + "".join(_table(t, detail) for t in TABLES if t.schema == name)
        + "</schema>"
        for name, description, utype in SCHEMAS
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<vosi:tableset xmlns:vosi="{TABLES_NS}" xmlns:xsi="{XSI}" xmlns:vs="{VS}">'
        f"{schemas}</vosi:tableset>"
    ).encode()


def one_table(table: TapTable) -> bytes:
    """/tap/tables/<name> (VOSI 1.1): the table with its columns."""
    inner = _table(table, "max")
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        + inner.replace(
            "<table ",
            f'<vosi:table xmlns:vosi="{TABLES_NS}" xmlns:xsi="{XSI}" xmlns:vs="{VS}" ',
            1,
        ).removesuffix("</table>")
        + "</vosi:table>"
    ).encode()


@dataclass(frozen=True)
class Example:
    key: str  # its fragment id
    name: str
    description: str
    query: str
    lineage: bool = False  # uses a lineage function: runnable here, not plain ADQL


def _example(e: Example) -> str:
    if e.lineage:  # not a DALI example: its query is not plain ADQL
        return (
            f'<div id="{e.key}"><h2>{escape(e.name)}</h2><p>{escape(e.description)}</p>'
            f'<pre class="adql-lineage">{escape(e.query)}</pre></div>'
        )
    return (
        f'<div typeof="example" id="{e.key}" resource="#{e.key}">'
        f'<h2 property="name">{escape(e.name)}</h2><p>{escape(e.description)}</p>'
        f'<pre class="query" property="query">{escape(e.query)}</pre></div>'
    )


def examples_page(examples: Sequence[Example], tap_url: str) -> bytes:
    """/tap/examples: DALI 1.1 examples (XHTML with RDFa, vocabulary
    http://www.ivoa.net/rdf/examples#), then the lineage functions' examples; each
    query runs on this server as it is."""
    plain = "".join(_example(e) for e in examples if not e.lineage)
    lineage = "".join(_example(e) for e in examples if e.lineage)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML+RDFa 1.1//EN" '
        '"http://www.w3.org/MarkUp/DTD/xhtml-rdfa-2.dtd">\n'
        '<html xmlns="http://www.w3.org/1999/xhtml" version="XHTML+RDFa 1.1">'
        "<head><title>ProvTAP examples</title></head>"
        '<body vocab="http://www.ivoa.net/rdf/examples#">'
        f"<h1>Queries for the TAP service at {escape(tap_url)}</h1>{plain}"
        "<h1>Lineage</h1><p>find_prov_precursors(id, max_depth) and "
        "find_prov_descendants(id, max_depth) are tables of (origin, id, node_type, depth, "
        "relation): use them in FROM and joins. The id may be a column of a table before "
        "them in FROM, as in FROM TAP_UPLOAD.mine AS u JOIN find_prov_precursors(u.file, 10) "
        "AS p ON p.origin = u.file.</p>"
        f"{lineage}</body></html>"
    ).encode()

"""ADQL to the store's SQL: parsed by sqlglot, checked against a whitelist, rewritten.

sqlglot has no ADQL dialect; T-SQL is the nearest (TOP, quoted identifiers, OFFSET,
WITH, set operations), so ADQL is read as a T-SQL subclass where the two differ. On the
parsed tree:

- one SELECT (or set operation of SELECTs), of whitelisted constructs and functions only;
  geometry is refused with its own message (provenance has no positions);
- every table must be one TAP exposes (provenance.*, tap_schema.*, TAP_UPLOAD.*) and every
  column one of its columns (sqlglot's qualify resolves and checks them);
- each table reference becomes the table's source, built for the reader (the visibility
  rule is inside every source: no other row, no other table of the database is reachable);
- the lineage functions find_prov_precursors / find_prov_descendants become the recursive
  walk of `provenance.query.lineage`, the code ProvSAP's walks run;
- the row limit (MAXREC + 1, to tell an overflow) is set on the outermost query.

Sources are compiled SQL put in place of a placeholder table name after the tree is
written out, so that a large upload is never parsed again.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

import sqlglot
from sqlalchemy import Select, String, TextualSelect, case, func, literal, select, text
from sqlalchemy import column as sql_column
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.dialects.sqlite.base import SQLiteDialect
from sqlalchemy.sql.selectable import SelectBase
from sqlglot import TokenType, exp
from sqlglot.dialects.tsql import TSQL
from sqlglot.errors import OptimizeError, ParseError, SqlglotError
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import Scope, traverse_scope

from opus.tap.results import Column
from opus.tap.schema import (
    BY_NAME,
    PROVENANCE,
    RAW,
    TAP_SCHEMA,
    TAP_UPLOAD,
    Reader,
    TapColumn,
    TapTable,
    tap_schema_rows,
)
from opus.tap.upload import UploadTable
from provenance.query import REACHES, Direction, lineage

LINEAGE: dict[str, Direction] = {
    "find_prov_precursors": "BACK",
    "find_prov_descendants": "FORTH",
}
MAX_LINEAGE_CALLS = 16
LINEAGE_COLUMNS: tuple[TapColumn, ...] = (
    TapColumn("origin", "char", "the node the walk started from", ucd="meta.id"),
    TapColumn("id", "char", "a node reached (an entity or an activity)", ucd="meta.id"),
    TapColumn("node_type", "char", "entity or activity", ucd="meta.code"),
    TapColumn(
        "depth", "int", "hops from the origin (its least)", arraysize=None, ucd="meta.number"
    ),
    TapColumn("relation", "char", "the relation that reached it: used or wasGeneratedBy"),
)
GEOMETRY = frozenset(
    {
        "point",
        "circle",
        "box",
        "polygon",
        "region",
        "contains",
        "intersects",
        "area",
        "centroid",
        "coord1",
        "coord2",
        "coordsys",
        "distance",
    }
)

# The constructs a query may hold (sqlglot's classes), beyond functions listed below.
STRUCTURE: tuple[type[exp.Expr], ...] = (
    exp.Select,
    exp.Union,
    exp.Intersect,
    exp.Except,
    exp.From,
    exp.Join,
    exp.Where,
    exp.Group,
    exp.Having,
    exp.Order,
    exp.Ordered,
    exp.Limit,
    exp.Offset,
    exp.Distinct,
    exp.With,
    exp.CTE,
    exp.Subquery,
    exp.Table,
    exp.TableAlias,
    exp.Alias,
    exp.Column,
    exp.Identifier,
    exp.Star,
    exp.Literal,
    exp.Null,
    exp.Boolean,
    exp.Paren,
    exp.Tuple,
    exp.DataType,
    exp.Var,
    exp.Neg,
    exp.Not,
    exp.And,
    exp.Or,
    exp.EQ,
    exp.NEQ,
    exp.GT,
    exp.GTE,
    exp.LT,
    exp.LTE,
    exp.Is,
    exp.In,
    exp.Between,
    exp.Like,
    exp.ILike,
    exp.Exists,
    exp.Add,
    exp.Sub,
    exp.Mul,
    exp.Div,
    exp.Mod,
    exp.DPipe,
    exp.Case,
    exp.If,
    exp.Cast,
    exp.Count,
    exp.Sum,
    exp.Avg,
    exp.Min,
    exp.Max,
    exp.Abs,
    exp.Ceil,
    exp.Floor,
    exp.Exp,
    exp.Ln,
    exp.Log,
    exp.Pow,
    exp.Sqrt,
    exp.Round,
    exp.Trunc,
    exp.Pi,
    exp.Rand,
    exp.Degrees,
    exp.Radians,
    exp.Sin,
    exp.Cos,
    exp.Tan,
    exp.Asin,
    exp.Acos,
    exp.Atan,
    exp.Atan2,
    exp.Lower,
    exp.Upper,
    exp.Coalesce,
    exp.Nullif,
    exp.Substring,
    exp.Length,
)


class AdqlError(Exception):
    """What is wrong with a query, for the client."""


class ADQL(TSQL):
    """ADQL 2.1 read as T-SQL, where they differ: TIMESTAMP is a date and time."""

    class Tokenizer(TSQL.Tokenizer):
        KEYWORDS: ClassVar[dict[str, TokenType]] = {
            **TSQL.Tokenizer.KEYWORDS,
            "TIMESTAMP": TokenType.TIMESTAMP,
        }


@dataclass(frozen=True)
class Translation:
    sql: str
    columns: list[Column]  # of the result, in order (types refined from rows when unknown)
    limit: int  # rows fetched at most (MAXREC + 1 unless TOP asks fewer)


@dataclass
class _Sources:
    """The tables a query uses, each under a placeholder name until the SQL is written."""

    token: str = field(default_factory=lambda: secrets.token_hex(4))
    sql: dict[str, str] = field(default_factory=dict)  # placeholder -> (SELECT ...)
    columns: dict[str, tuple[TapColumn, ...]] = field(default_factory=dict)
    raw: dict[str, set[str]] = field(default_factory=dict)  # placeholder -> id columns

    def compiled(self, name: str, statement: Select[Any], reader: Reader) -> None:
        """A source's SQL, and which of its columns have their stored form beside them."""
        self.raw[name] = _raw_keys(statement)
        self.sql[name] = _compile(statement, reader)

    def add(self, columns: Sequence[TapColumn]) -> str:
        name = f"src_{self.token}_{len(self.columns)}"
        self.columns[name] = tuple(columns)
        return name


def translate(
    query: str,
    reader: Reader,
    *,
    uploads: Mapping[str, UploadTable],
    maxrec: int,
    max_depth: int,
    qname: Callable[[str], str],
) -> Translation:
    """The SQL of an ADQL query for the reader's database.

    Args:
        query: The ADQL text.
        reader: For whom (visibility) and where (identifiers, locations, dialect).
        uploads: TAP_UPLOAD tables by lower-case name.
        maxrec: Rows wanted at most; one more is fetched to tell an overflow.
        max_depth: The most hops a lineage function may be asked for.
        qname: An identifier as a client gives it (URI of this server or qualified name)
            -> the qualified name stored.

    Raises:
        AdqlError: The query is not ADQL this service runs; the message says why and where.
    """
    tree = _parse(query)
    _check(tree)
    sources = _Sources()
    _lineage_calls(tree, sources, reader, uploads, max_depth, qname)
    _tables(tree, sources, reader, uploads)
    schema: dict[str, object] = {
        name: {c.key: _sql_type(c) for c in cols} for name, cols in sources.columns.items()
    }
    try:
        tree = qualify(
            tree,
            schema=schema,
            dialect=ADQL,
            validate_qualify_columns=True,
            quote_identifiers=False,
            sql=query,
        )
    except (OptimizeError, SqlglotError) as exc:
        raise AdqlError(_column_message(str(exc), sources)) from None
    columns = _result_columns(tree, sources)
    _compare_stored(tree, sources, reader.namespace)
    limit = maxrec + 1
    limited = _limited(tree, limit)
    dialect = "sqlite" if reader.sqlite else "postgres"
    try:
        sql = limited.sql(
            dialect=dialect, identify=True, unsupported_level=sqlglot.ErrorLevel.RAISE
        )
    except SqlglotError as exc:
        raise AdqlError(f"this query cannot run here: {exc}") from None
    for name, source in sources.sql.items():
        sql = sql.replace(f'"{name}"', source)
    return Translation(sql, columns, limit)


def _parse(query: str) -> exp.Query:
    if not query.strip():
        raise AdqlError("QUERY is empty")
    try:
        statements = [s for s in sqlglot.parse(query, read=ADQL) if s is not None]
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        where = f" at line {first.get('line')}, column {first.get('col')}" if first else ""
        what = first.get("description") or str(exc).split("\n", 1)[0]
        near = first.get("highlight") or ""
        raise AdqlError(
            f"the query is not valid ADQL{where}: {what}" + (f" (near {near!r})" if near else "")
        ) from None
    except SqlglotError as exc:
        raise AdqlError(f"the query is not valid ADQL: {exc}") from None
    if len(statements) != 1:
        raise AdqlError(f"QUERY must be one SELECT statement (found {len(statements)})")
    tree = statements[0]
    if not isinstance(tree, exp.Query):
        raise AdqlError(f"only SELECT queries are allowed (found {tree.key.upper()})")
    return tree


def _check(tree: exp.Expr) -> None:
    for node in tree.walk():
        if isinstance(node, exp.Anonymous):
            name = node.name.lower()
            if name in LINEAGE and isinstance(node.parent, exp.Table):
                continue
            if name in GEOMETRY:
                raise AdqlError(
                    f"{name.upper()}: geometry is not supported by this service "
                    "(provenance has no positions)"
                )
            if name in LINEAGE:
                raise AdqlError(
                    f"{name} is a table: use it in FROM, as FROM {name}(id, depth) AS p"
                )
            raise AdqlError(f"unknown function {node.name.upper()}")
        if isinstance(node, exp.Func) and node.sql_name().lower() in GEOMETRY:
            raise AdqlError(
                f"{node.sql_name()}: geometry is not supported by this service "
                "(provenance has no positions)"
            )
        if isinstance(node, exp.Select) and not node.expressions:
            raise AdqlError("the query is not valid ADQL: SELECT needs a select list")
        if isinstance(node, exp.Func) and not isinstance(node, STRUCTURE):
            raise AdqlError(f"function {node.sql_name()} is not supported")
        if not isinstance(node, (*STRUCTURE, exp.Anonymous)):
            raise AdqlError(f"{node.key.upper()} is not allowed in a query here")


def _lineage_calls(
    tree: exp.Expr,
    sources: _Sources,
    reader: Reader,
    uploads: Mapping[str, UploadTable],
    max_depth: int,
    qname: Callable[[str], str],
) -> None:
    calls = [
        t
        for t in tree.find_all(exp.Table)
        if isinstance(t.this, exp.Anonymous) and t.this.name.lower() in LINEAGE
    ]
    if len(calls) > MAX_LINEAGE_CALLS:
        raise AdqlError(f"at most {MAX_LINEAGE_CALLS} lineage functions in one query")
    for table in calls:
        function = table.this
        name = function.name.lower()
        args = function.expressions
        if len(args) not in (1, 2):
            raise AdqlError(f"{name} takes an id and a depth: {name}('<id>', 10)")
        start = args[0]
        if isinstance(start, exp.Literal) and start.is_string:
            seeds: Any = _one_seed(qname(start.this))
        elif isinstance(start, exp.Column):
            seeds = _column_seeds(start, table, name, reader, uploads)
        else:
            raise AdqlError(
                f"{name}: the id must be a string ('<uri of an entity>') or a column of "
                f"another table of the FROM clause ({name}(u.file, 10))"
            )
        depth = max_depth
        if len(args) == 2:
            given = args[1]
            if not (isinstance(given, exp.Literal) and not given.is_string and given.is_int):
                raise AdqlError(f"{name}: the depth must be a whole number")
            depth = int(given.this)
            if not 1 <= depth <= max_depth:
                raise AdqlError(f"{name}: the depth must be from 1 to {max_depth} (given {depth})")
        placeholder = sources.add(LINEAGE_COLUMNS)
        statement = _lineage_source(seeds, depth, LINEAGE[name], reader, placeholder)
        sources.compiled(placeholder, statement, reader)
        alias = table.args.get("alias") or exp.TableAlias(this=exp.to_identifier(name))
        table.replace(exp.Table(this=exp.to_identifier(placeholder), alias=alias))


def _raw_keys(statement: Select[Any]) -> set[str]:
    """The columns of a source that have their stored form beside them (`<key>__q`)."""
    return {k.removesuffix(RAW) for k in statement.selected_columns.keys() if k.endswith(RAW)}  # noqa: SIM118


def _one_seed(start: str) -> Any:
    return select(literal(start, String).label("origin"), literal(start, String).label("node"))


def _column_seeds(
    column: exp.Column,
    function: exp.Table,
    name: str,
    reader: Reader,
    uploads: Mapping[str, UploadTable],
) -> TextualSelect:
    """Walks from every value of a column of another table of the same FROM (an upload:
    the lineage of these 500 files); each row's `origin` tells which value it came from."""
    query = function.find_ancestor(exp.Select)
    if not column.table or query is None:
        raise AdqlError(f"{name}: name the column with its table, as {name}(u.file, 10)")
    start = query.args.get("from") or query.args.get("from_")
    candidates = [start.this] if start is not None else []
    candidates += [j.this for j in query.args.get("joins") or []]
    found = next(
        (
            t
            for t in candidates
            if isinstance(t, exp.Table)
            and not isinstance(t.this, exp.Anonymous)
            and t.alias_or_name.lower() == column.table.lower()
        ),
        None,
    )
    if found is None:
        raise AdqlError(f"{name}: no table {column.table} before it in the FROM clause")
    table = _find_table(found.db.lower(), found.name, uploads)
    key = column.name.lower()
    dialect = "sqlite" if reader.sqlite else "postgres"
    if isinstance(table, UploadTable):
        columns = [_upload_column(c) for c in table.columns]
        source = _values_sql(columns, table.rows, reader)
        raw_keys: set[str] = set()
    else:
        columns = list(table.columns)
        if table.source is None:
            source = _values_sql(columns, tap_schema_rows()[table.name], reader)
            raw_keys = set()
        else:
            statement = table.source(reader)
            source = _compile(statement, reader)
            raw_keys = _raw_keys(statement)
    if key not in {c.key for c in columns}:
        raise AdqlError(f"{name}: {column.table} has no column {column.name}")
    if key in raw_keys:
        value = f'"s"."{key}{RAW}"'
    else:
        value = _as_stored(exp.column(key, table="s", quoted=True), reader.namespace).sql(dialect)
    return text(f'SELECT DISTINCT {value} AS origin, {value} AS node FROM {source} AS "s"').columns(
        sql_column("origin", String), sql_column("node", String)
    )


def _lineage_source(
    seeds: Select[Any] | TextualSelect, depth: int, direction: Direction, reader: Reader, name: str
) -> Select[Any]:
    from opus.tap.schema import _uri  # the same URIs as the views'

    walk = lineage(seeds, depth, direction, reader.allowed, name=f"walk_{name}")
    node_type = case(
        *((walk.c.relation == rel, kind) for (d, rel), kind in REACHES.items() if d == direction)
    )
    return (
        select(
            _uri(walk.c.origin, reader).label("origin"),
            walk.c.origin.label("origin" + RAW),
            _uri(walk.c.node, reader).label("id"),
            walk.c.node.label("id" + RAW),
            node_type.label("node_type"),
            func.min(walk.c.depth).label("depth"),
            walk.c.relation.label("relation"),
        )
        .where(walk.c.depth > 0)
        .group_by(walk.c.origin, walk.c.node, walk.c.relation)
    )


def _compile(statement: SelectBase, reader: Reader) -> str:
    dialect = SQLiteDialect() if reader.sqlite else PGDialect()  # type: ignore[no-untyped-call]
    compiled = statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True})
    return f"({compiled})"


def _tables(
    tree: exp.Expr, sources: _Sources, reader: Reader, uploads: Mapping[str, UploadTable]
) -> None:
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    for table in list(tree.find_all(exp.Table)):
        name = table.name
        if name.startswith(f"src_{sources.token}_"):
            continue  # a lineage function, already placed
        schema = table.db.lower()
        if table.catalog:
            raise AdqlError(f"no table {table.sql()}: names are schema.table")
        if not schema and name.lower() in ctes:
            continue
        found = _find_table(schema, name, uploads)
        if isinstance(found, UploadTable):
            placeholder = sources.add([_upload_column(c) for c in found.columns])
            sources.sql[placeholder] = _values_sql(sources.columns[placeholder], found.rows, reader)
        elif found.source is not None:
            placeholder = sources.add(found.columns)
            sources.compiled(placeholder, found.source(reader), reader)
        else:
            placeholder = sources.add(found.columns)
            sources.sql[placeholder] = _values_sql(
                found.columns, tap_schema_rows()[found.name], reader
            )
        alias = table.args.get("alias") or exp.TableAlias(this=exp.to_identifier(name))
        table.replace(exp.Table(this=exp.to_identifier(placeholder), alias=alias))
    for column in tree.find_all(exp.Column):  # provenance.entity.id -> entity.id
        for part in ("db", "catalog"):
            if column.args.get(part):
                column.set(part, None)


def _find_table(
    schema: str, name: str, uploads: Mapping[str, UploadTable]
) -> TapTable | UploadTable:
    key = name.lower()
    if schema == TAP_UPLOAD:
        if key in uploads:
            return uploads[key]
        given = ", ".join(sorted(uploads)) or "none were uploaded"
        raise AdqlError(f"no uploaded table TAP_UPLOAD.{name} ({given})")
    candidates = [f"{schema}.{key}"] if schema else [f"{PROVENANCE}.{key}", f"{TAP_SCHEMA}.{key}"]
    for qualified in candidates:
        if qualified in BY_NAME:
            return BY_NAME[qualified]
    shown = f"{schema}.{name}" if schema else name
    raise AdqlError(
        f"no table {shown}: the tables are provenance.<ProvDM class> and tap_schema.* "
        "(see /tap/tables)"
    )


def _upload_column(column: Column) -> TapColumn:
    return TapColumn(
        column.name,
        column.datatype,
        column.description or "",
        utype=column.utype,
        ucd=column.ucd,
        unit=column.unit,
        arraysize=column.arraysize,
        xtype=column.xtype,
    )


def _sql_type(column: TapColumn) -> str:
    if column.xtype == "timestamp":
        return "TIMESTAMP"
    return {
        "boolean": "BOOLEAN",
        "short": "SMALLINT",
        "int": "INT",
        "long": "BIGINT",
        "float": "REAL",
        "double": "DOUBLE",
    }.get(column.datatype, "VARCHAR")


PG_TYPES = {
    "TIMESTAMP": "TIMESTAMP",
    "BOOLEAN": "BOOLEAN",
    "SMALLINT": "SMALLINT",
    "INT": "INTEGER",
    "BIGINT": "BIGINT",
    "REAL": "REAL",
    "DOUBLE": "DOUBLE PRECISION",
    "VARCHAR": "TEXT",
}


def _literal(value: Any, column: TapColumn, reader: Reader) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return ("1" if value else "0") if reader.sqlite else ("TRUE" if value else "FALSE")
    if isinstance(value, int | float):
        return repr(value) if value == value else "NULL"  # NaN is null
    if isinstance(value, datetime):
        value = value.isoformat(timespec="microseconds" if value.microsecond else "seconds")
    text = str(value).replace("\x00", "")
    return "'" + text.replace("'", "''") + "'"


def _values_sql(columns: Sequence[TapColumn], rows: Sequence[Sequence[Any]], reader: Reader) -> str:
    """A table of literal rows: SELECT column1 AS a, ... FROM (VALUES ...), which both
    databases read (PostgreSQL with each column cast to its type)."""

    def typed(position: int, column: TapColumn) -> str:
        name = f"column{position + 1}"
        if reader.sqlite:
            return f'{name} AS "{column.key}"'
        return f'CAST({name} AS {PG_TYPES[_sql_type(column)]}) AS "{column.key}"'

    if not rows:
        nulls = ", ".join(
            f'CAST(NULL AS {PG_TYPES[_sql_type(c)]}) AS "{c.key}"'
            if not reader.sqlite
            else f'NULL AS "{c.key}"'
            for c in columns
        )
        return f"(SELECT {nulls} WHERE 1 = 0)"
    values = ", ".join(
        "(" + ", ".join(_literal(v, c, reader) for v, c in zip(row, columns, strict=True)) + ")"
        for row in rows
    )
    selected = ", ".join(typed(i, c) for i, c in enumerate(columns))
    return f"(SELECT {selected} FROM (VALUES {values}) AS v)"


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _column_message(message: str, sources: _Sources) -> str:
    """sqlglot's complaint about a column, in the client's terms (no placeholders, no
    terminal colours, on one line)."""
    for name in sources.columns:
        message = message.replace(name, "")
    text = " ".join(ANSI.sub("", message).split())
    return f"in the query: {text}"


def _result_columns(tree: exp.Expr, sources: _Sources) -> list[Column]:
    """The result's columns: metadata of the column selected when it is one, else only
    the name (the type is found from the values)."""
    scopes = traverse_scope(tree)
    root: Scope | None = scopes[-1] if scopes else None
    while root is not None and root.set_operation_scopes:
        root = root.set_operation_scopes[0]
    select_node = root.expression if root is not None else tree
    found: list[Column] = []
    if not isinstance(select_node, exp.Select):
        return found
    for item in select_node.expressions:
        name = item.alias_or_name
        inner = item.this if isinstance(item, exp.Alias) else item
        meta = _column_meta(inner, root, sources) if isinstance(inner, exp.Column) else None
        if meta is not None and meta.key == name.lower():
            found.append(_column(meta, meta.name.strip('"')))
        elif meta is not None:
            found.append(_column(meta, name))
        else:
            found.append(Column(name, ""))
    return found


def _column_meta(column: exp.Column, scope: Scope | None, sources: _Sources) -> TapColumn | None:
    while scope is not None:
        source = scope.sources.get(column.table)
        if isinstance(source, exp.Table):
            for candidate in sources.columns.get(source.name, ()):
                if candidate.key == column.name.lower():
                    return candidate
            return None
        if isinstance(source, Scope):
            inner = next(
                (
                    s
                    for s in source.expression.expressions
                    if s.alias_or_name.lower() == column.name.lower()
                )
                if isinstance(source.expression, exp.Select)
                else iter(()),
                None,
            )
            if inner is None:
                return None
            value = inner.this if isinstance(inner, exp.Alias) else inner
            if not isinstance(value, exp.Column):
                return None
            column, scope = value, source
            continue
        return None
    return None


def _column(meta: TapColumn, name: str) -> Column:
    return Column(
        name,
        meta.datatype,
        arraysize=meta.arraysize,
        xtype=meta.xtype,
        unit=meta.unit,
        ucd=meta.ucd,
        utype=meta.utype,
        description=meta.description,
    )


def _compare_stored(tree: exp.Expr, sources: _Sources, namespace: str) -> None:
    """Comparisons of identifiers made on their stored forms, which the indexes cover:
    `e.id = p.id`, `e.id = '<uri>'`, `e.id IN ('<uri>', ...)` and `e.id = u.file` (an
    uploaded column: its values turned into the stored form) compare the columns'
    `<key>__q` twins. The URIs shown are a one-to-one function of the stored names,
    so the rows found are the same; the database need not compute a URI per row."""
    done: set[int] = set()
    for scope in traverse_scope(tree):
        for column in list(scope.columns):
            parent = column.parent
            if parent is None or id(parent) in done:
                continue
            if isinstance(parent, exp.EQ):
                left, right = parent.this, parent.expression
                left_raw, right_raw = _stored(left, scope, sources), _stored(right, scope, sources)
                if left_raw is None and right_raw is None:
                    continue
                done.add(id(parent))
                parent.set("this", left_raw or _as_stored(left, namespace))
                parent.set("expression", right_raw or _as_stored(right, namespace))
            elif isinstance(parent, exp.In) and parent.this is column:
                raw = _stored(column, scope, sources)
                values = parent.expressions
                literals = all(isinstance(v, exp.Literal) and v.is_string for v in values)
                if raw is None or parent.args.get("query") or not literals:
                    continue
                done.add(id(parent))
                parent.set("this", raw)
                parent.set("expressions", [_as_stored(v, namespace) for v in values])


def _stored(column: exp.Expr, scope: Scope, sources: _Sources) -> exp.Column | None:
    """The stored twin of an identifier column of a view, if `column` is one."""
    if not isinstance(column, exp.Column):
        return None
    source = scope.sources.get(column.table)
    if isinstance(source, exp.Table) and column.name in sources.raw.get(source.name, ()):
        return exp.column(column.name + RAW, table=column.table)
    return None


def _as_stored(value: exp.Expr, namespace: str) -> exp.Expr:
    """A URI (literal or column) in the form the store keeps: `opus:<local>`."""
    if isinstance(value, exp.Literal) and value.is_string:
        given = str(value.this)
        for prefix in (namespace, "urn:opus:"):
            if given.startswith(prefix):
                return exp.Literal.string("opus:" + given[len(prefix) :])
        return value
    start = exp.Literal.number(len(namespace) + 1)
    rest = exp.Substring(this=value.copy(), start=start)
    base = exp.Literal.string(namespace)
    return exp.Case(
        ifs=[
            exp.If(
                this=exp.EQ(
                    this=exp.Substring(
                        this=value.copy(),
                        start=exp.Literal.number(1),
                        length=exp.Literal.number(len(namespace)),
                    ),
                    expression=base,
                ),
                true=exp.DPipe(this=exp.Literal.string("opus:"), expression=rest),
            )
        ],
        default=value.copy(),
    )


def _limited(tree: exp.Expr, limit: int) -> exp.Expr:
    """At most `limit` rows: a smaller TOP/LIMIT of the query's own is kept."""
    if isinstance(tree, exp.Select):
        current = tree.args.get("limit")
        given = _limit_value(current)
        if given is not None and given <= limit:
            return tree
        return tree.limit(limit, copy=False)
    wrapped = exp.select("*").from_(
        exp.Subquery(this=tree, alias=exp.TableAlias(this=exp.to_identifier("q")))
    )
    return wrapped.limit(limit, copy=False)


def _limit_value(node: exp.Expr | None) -> int | None:
    if node is None:
        return None
    value = node.args.get("expression") or node.this
    if isinstance(value, exp.Literal) and value.is_int:
        return int(value.this)
    raise AdqlError("TOP takes a whole number")

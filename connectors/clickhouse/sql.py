"""The SQL shipped with the package: the tables' DDL and one query file per report metric.

Query files carry `{name:Type}` placeholders (ClickHouse query-parameter syntax, so a recent
clickhouse-client can run them with `--param_name=`); `render` replaces them with literals, which
every server version accepts, including Debian's 18.16 that predates query parameters.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent
DDL_PATH = PACKAGE_DIR / "ddl.sql"
QUERIES_DIR = PACKAGE_DIR / "queries"

_PLACEHOLDER = re.compile(r"\{(\w+):([^{}]+)\}")


def ddl() -> list[str]:
    """The CREATE TABLE statements of the analytics tables (idempotent: IF NOT EXISTS), one by one.

    One statement per call: neither clickhouse-driver nor chdb runs several in one query. The
    file separates them by a `;` at the end of a line.
    """
    text = _without_comment_lines(DDL_PATH.read_text())
    return [statement.strip() for statement in re.split(r";[ \t]*$", text, flags=re.MULTILINE) if statement.strip()]


_CREATE = re.compile(r"^CREATE TABLE IF NOT EXISTS (\w+)\s*\((.*)\)\s*ENGINE", re.DOTALL)
_COLUMN = re.compile(r"^(\w+)\s+(.+?)\s*,?$")
PRESENT_COLUMNS = "SELECT table, name FROM system.columns WHERE database = currentDatabase()"
"""The columns the tables have now (the same query on 18.16 and on chdb)."""


def table_columns() -> dict[str, list[tuple[str, str]]]:
    """Each table of the DDL with its columns in order, as (name, type); the DDL writes one column a line."""
    tables: dict[str, list[tuple[str, str]]] = {}
    for statement in ddl():
        match = _CREATE.match(statement)
        if match is None:
            continue
        columns = tables.setdefault(match.group(1), [])
        for line in match.group(2).splitlines():
            definition = line.split("--", 1)[0].strip()
            if definition:
                column = _COLUMN.match(definition)
                if column is None:
                    raise ValueError(f"ddl.sql: cannot read the column definition {definition!r}")
                columns.append((column.group(1), column.group(2)))
    return tables


def missing_columns(present: Mapping[str, set[str]]) -> list[str]:
    """`ALTER TABLE ... ADD COLUMN` for each DDL column an existing table lacks, each after its DDL neighbour.

    The migration of a table an older release created (CREATE TABLE IF NOT EXISTS leaves it as it was).
    One statement per column, so a column another process added meanwhile fails alone (see the store).
    Tables absent from `present` are left alone: the CREATE statements make them whole.
    """
    statements = []
    for table, columns in table_columns().items():
        have = present.get(table)
        if not have:
            continue
        for i, (name, type_) in enumerate(columns):
            if name not in have:
                where = f" AFTER {columns[i - 1][0]}" if i > 0 else ""  # 18.16 has AFTER but no FIRST
                statements.append(f"ALTER TABLE {table} ADD COLUMN {name} {type_}{where}")
    return statements


def query_names() -> list[str]:
    """The metrics shipped as SQL files, by file stem."""
    return sorted(path.stem for path in QUERIES_DIR.glob("*.sql"))


def load_query(name: str) -> str:
    """A query file without its comment header (the header documents placeholders it would otherwise match)."""
    path = QUERIES_DIR / f"{name}.sql"
    if not path.is_file():
        raise KeyError(f"no query {name!r}; known: {', '.join(query_names())}")
    return _without_comment_lines(path.read_text())


def render(sql: str, parameters: Mapping[str, Any] | None = None) -> str:
    """Replace each `{name:Type}` placeholder with a literal of parameters[name]."""
    values = dict(parameters or {})

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise KeyError(f"query parameter {name!r} ({match.group(2)}) has no value")
        return literal(values[name])

    return _PLACEHOLDER.sub(substitute, sql)


def literal(value: Any) -> str:
    """A ClickHouse literal for a Python value; datetimes become UTC `toDateTime(...)` (naive means UTC)."""
    if isinstance(value, datetime):
        moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return f"toDateTime('{moment:%Y-%m-%d %H:%M:%S}', 'UTC')"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot pass {value} as a query parameter")
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace("'", "\\'")
        return f"'{escaped}'"
    raise TypeError(f"no ClickHouse literal for {type(value).__name__}")


def _without_comment_lines(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--")).strip()

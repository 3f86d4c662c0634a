"""ClickHouse analytics: the events table (chdb in process, or a server by URL) and its report SQL."""

from connectors.clickhouse.rows import COLUMNS, flatten
from connectors.clickhouse.sql import DDL_PATH, QUERIES_DIR, ddl, load_query, query_names, render
from connectors.clickhouse.store import ChdbEventStore, ClickHouseEventStore, EventStoreLocked, open_event_store

__all__ = [
    "COLUMNS",
    "DDL_PATH",
    "QUERIES_DIR",
    "ChdbEventStore",
    "ClickHouseEventStore",
    "EventStoreLocked",
    "ddl",
    "flatten",
    "load_query",
    "open_event_store",
    "query_names",
    "render",
]

-- Human first response time: exact p50/p90 of first_response_s (waiting -> the human's first reply, as the
-- workspace measured it) over the resolutions in the window that carry it (first_response_s >= 0); meaningless
-- when resolutions = 0 (nan, or 0 on 18.16).
-- Parameters: {since:DateTime('UTC')} and {until:DateTime('UTC')}, the window [since, until) in UTC, on the feedback's `at`.
--   clickhouse-client 19.x+:  clickhouse-client --param_since='2025-01-01 00:00:00' --param_until='2025-01-08 00:00:00' < FILE
--   clickhouse-client 18.16:  replace each placeholder with a literal first, e.g.
--                             sed "s/{since:[^}]*}/toDateTime('2025-01-01 00:00:00', 'UTC')/g; s/{until:[^}]*}/toDateTime('2025-01-08 00:00:00', 'UTC')/g" FILE | clickhouse-client
--   supportflow replaces them with toDateTime('...', 'UTC') literals (connectors/clickhouse/sql.py).
-- Reads `feedback FINAL`, so a feedback record inserted twice (retried batch, replayed action) counts once.
SELECT
    count() AS resolutions,
    quantilesExact(0.5, 0.9)(first_response_s) AS q,
    q[1] AS p50_s,
    q[2] AS p90_s
FROM feedback FINAL
WHERE at >= {since:DateTime('UTC')} AND at < {until:DateTime('UTC')}
  AND kind = 'resolution' AND first_response_s >= 0

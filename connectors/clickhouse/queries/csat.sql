-- CSAT: the customers' satisfaction answers (kind csat, rating 1..5) in the window: how many, the
-- mean rating and the share of 4s and 5s ("satisfied"); mean and share are meaningless when answers = 0.
-- Parameters: {since:DateTime('UTC')} and {until:DateTime('UTC')}, the window [since, until) in UTC, on the feedback's `at`.
--   clickhouse-client 19.x+:  clickhouse-client --param_since='2025-01-01 00:00:00' --param_until='2025-01-08 00:00:00' < FILE
--   clickhouse-client 18.16:  replace each placeholder with a literal first, e.g.
--                             sed "s/{since:[^}]*}/toDateTime('2025-01-01 00:00:00', 'UTC')/g; s/{until:[^}]*}/toDateTime('2025-01-08 00:00:00', 'UTC')/g" FILE | clickhouse-client
--   supportflow replaces them with toDateTime('...', 'UTC') literals (connectors/clickhouse/sql.py).
-- Reads `feedback FINAL`, so a feedback record inserted twice (retried batch, replayed action) counts once.
SELECT
    count() AS answers,
    avg(rating) AS mean_rating,
    countIf(rating >= 4) / count() AS satisfied_share
FROM feedback FINAL
WHERE at >= {since:DateTime('UTC')} AND at < {until:DateTime('UTC')}
  AND kind = 'csat' AND rating > 0

-- CSAT by channel: per channel the answers, mean rating and share of 4s and 5s, most answers first
-- ('unknown' when the answer did not say its channel).
-- Parameters: {since:DateTime('UTC')} and {until:DateTime('UTC')}, the window [since, until) in UTC, on the feedback's `at`.
--   clickhouse-client 19.x+:  clickhouse-client --param_since='2025-01-01 00:00:00' --param_until='2025-01-08 00:00:00' < FILE
--   clickhouse-client 18.16:  replace each placeholder with a literal first, e.g.
--                             sed "s/{since:[^}]*}/toDateTime('2025-01-01 00:00:00', 'UTC')/g; s/{until:[^}]*}/toDateTime('2025-01-08 00:00:00', 'UTC')/g" FILE | clickhouse-client
--   supportflow replaces them with toDateTime('...', 'UTC') literals (connectors/clickhouse/sql.py).
-- Reads `feedback FINAL`, so a feedback record inserted twice (retried batch, replayed action) counts once.
SELECT
    if(channel = '', 'unknown', channel) AS channel_name,
    count() AS answers,
    avg(rating) AS mean_rating,
    countIf(rating >= 4) / count() AS satisfied_share
FROM feedback FINAL
WHERE at >= {since:DateTime('UTC')} AND at < {until:DateTime('UTC')}
  AND kind = 'csat' AND rating > 0
GROUP BY channel_name
ORDER BY answers DESC, channel_name

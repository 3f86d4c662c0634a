-- Sentiment trend: per time bucket, the mean sentiment score (-1..1) and the share of negative turns.
-- One more parameter: {bucket_seconds:UInt32}, the bucket width in seconds (e.g. 3600; for 18.16 add
-- `s/{bucket_seconds:[^}]*}/3600/g` to the sed below). Buckets start at multiples of it since
-- 1970-01-01 UTC; only buckets with turns are returned.
-- Parameters: {since:DateTime('UTC')} and {until:DateTime('UTC')}, the window [since, until) in UTC.
--   clickhouse-client 19.x+:  clickhouse-client --param_since='2025-01-01 00:00:00' --param_until='2025-01-08 00:00:00' < FILE
--   clickhouse-client 18.16:  replace each placeholder with a literal first, e.g.
--                             sed "s/{since:[^}]*}/toDateTime('2025-01-01 00:00:00', 'UTC')/g; s/{until:[^}]*}/toDateTime('2025-01-08 00:00:00', 'UTC')/g" FILE | clickhouse-client
--   supportflow replaces them with toDateTime('...', 'UTC') literals (connectors/clickhouse/sql.py).
-- Reads `events FINAL`, so an event inserted twice (retried batch, replayed turn) counts once.
-- A "turn" is an event of type turn_processed (answered by the agent) or escalated (handed to a human).
SELECT
    toDateTime(intDiv(toUInt32(timestamp), {bucket_seconds:UInt32}) * {bucket_seconds:UInt32}, 'UTC') AS bucket_start,
    count() AS turns,
    avg(sentiment_score) AS mean_score,
    countIf(sentiment_label = 'negative') / turns AS negative_share
FROM events FINAL
WHERE timestamp >= {since:DateTime('UTC')} AND timestamp < {until:DateTime('UTC')}
  AND event_type IN ('turn_processed', 'escalated')
GROUP BY bucket_start
ORDER BY bucket_start

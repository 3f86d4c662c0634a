-- Cost per conversation: total model cost (USD) of the turns in the window over the distinct conversations
-- they belong to; nan when there are none.
-- Parameters: {since:DateTime('UTC')} and {until:DateTime('UTC')}, the window [since, until) in UTC.
--   clickhouse-client 19.x+:  clickhouse-client --param_since='2025-01-01 00:00:00' --param_until='2025-01-08 00:00:00' < FILE
--   clickhouse-client 18.16:  replace each placeholder with a literal first, e.g.
--                             sed "s/{since:[^}]*}/toDateTime('2025-01-01 00:00:00', 'UTC')/g; s/{until:[^}]*}/toDateTime('2025-01-08 00:00:00', 'UTC')/g" FILE | clickhouse-client
--   supportflow replaces them with toDateTime('...', 'UTC') literals (connectors/clickhouse/sql.py).
-- Reads `events FINAL`, so an event inserted twice (retried batch, replayed turn) counts once.
-- A "turn" is an event of type turn_processed (answered by the agent) or escalated (handed to a human).
SELECT
    uniqExact(conversation_id) AS conversations,
    sum(cost_usd) AS total_cost_usd,
    total_cost_usd / conversations AS cost_per_conversation_usd
FROM events FINAL
WHERE timestamp >= {since:DateTime('UTC')} AND timestamp < {until:DateTime('UTC')}
  AND event_type IN ('turn_processed', 'escalated')

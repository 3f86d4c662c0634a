-- Escalation rate: the share of turns in the window handed to a human. rate is nan when there are no turns.
-- Parameters: {since:DateTime('UTC')} and {until:DateTime('UTC')}, the window [since, until) in UTC.
--   clickhouse-client 19.x+:  clickhouse-client --param_since='2025-01-01 00:00:00' --param_until='2025-01-08 00:00:00' < FILE
--   clickhouse-client 18.16:  replace each placeholder with a literal first, e.g.
--                             sed "s/{since:[^}]*}/toDateTime('2025-01-01 00:00:00', 'UTC')/g; s/{until:[^}]*}/toDateTime('2025-01-08 00:00:00', 'UTC')/g" FILE | clickhouse-client
--   supportflow replaces them with toDateTime('...', 'UTC') literals (connectors/clickhouse/sql.py).
-- Reads `events FINAL`, so an event inserted twice (retried batch, replayed turn) counts once.
-- A "turn" is an event of type turn_processed (answered by the agent) or escalated (handed to a human).
-- A follow-up (a message the customer wrote while a human had the conversation, action_status
-- 'follow_up') is a turn, but not a new hand-over.
SELECT
    count() AS turns,
    countIf(event_type = 'escalated' AND action_status != 'follow_up') AS escalated,
    escalated / turns AS rate
FROM events FINAL
WHERE timestamp >= {since:DateTime('UTC')} AND timestamp < {until:DateTime('UTC')}
  AND event_type IN ('turn_processed', 'escalated')

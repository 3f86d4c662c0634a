-- Escalation reasons: escalated turns per reason (the route or guard rule that fired), most frequent first.
-- Parameters: {since:DateTime('UTC')} and {until:DateTime('UTC')}, the window [since, until) in UTC.
--   clickhouse-client 19.x+:  clickhouse-client --param_since='2025-01-01 00:00:00' --param_until='2025-01-08 00:00:00' < FILE
--   clickhouse-client 18.16:  replace each placeholder with a literal first, e.g.
--                             sed "s/{since:[^}]*}/toDateTime('2025-01-01 00:00:00', 'UTC')/g; s/{until:[^}]*}/toDateTime('2025-01-08 00:00:00', 'UTC')/g" FILE | clickhouse-client
--   supportflow replaces them with toDateTime('...', 'UTC') literals (connectors/clickhouse/sql.py).
-- Reads `events FINAL`, so an event inserted twice (retried batch, replayed turn) counts once.
-- A "turn" is an event of type turn_processed (answered by the agent) or escalated (handed to a human).
SELECT
    action_name AS reason,
    count() AS escalations
FROM events FINAL
WHERE timestamp >= {since:DateTime('UTC')} AND timestamp < {until:DateTime('UTC')}
  AND event_type = 'escalated'
  AND action_status != 'follow_up'  -- a message to the human already holding it, not a hand-over
GROUP BY reason
ORDER BY escalations DESC, reason

-- The knowledge base per domain: how often it was searched, answered, answered with low confidence (less
-- than {margin:Float64} above the threshold), fell short to a human (`knowledge_gap`) or kept the template
-- (a side question mid-task it could not answer), and the mean confidence. Most searched first.
-- Parameters: {since:DateTime('UTC')} and {until:DateTime('UTC')}, the window [since, until) in UTC.
--   clickhouse-client 19.x+:  clickhouse-client --param_since='2025-01-01 00:00:00' --param_until='2025-01-08 00:00:00' < FILE
--   clickhouse-client 18.16:  replace each placeholder with a literal first, e.g.
--                             sed "s/{since:[^}]*}/toDateTime('2025-01-01 00:00:00', 'UTC')/g; s/{until:[^}]*}/toDateTime('2025-01-08 00:00:00', 'UTC')/g" FILE | clickhouse-client
--   supportflow replaces them with toDateTime('...', 'UTC') literals (connectors/clickhouse/sql.py).
-- Reads `events FINAL`, so an event inserted twice (retried batch, replayed turn) counts once.
-- A search is a turn that `answer` looked up (knowledge_used = 1); follow-ups to a human holding the
-- conversation are not searches. An escalated turn whose cited answer guard blocked counts as searched only.
-- `domain` is the cited article's, else the best passage's; '' when the search found nothing.
SELECT
    knowledge_domain AS domain,
    count() AS searched,
    countIf(event_type = 'turn_processed' AND knowledge_answered = 1) AS answered,
    countIf(
        event_type = 'turn_processed' AND knowledge_answered = 1
        AND knowledge_confidence < knowledge_threshold + {margin:Float64}
    ) AS low_confidence,
    countIf(event_type = 'escalated' AND action_name = 'knowledge_gap') AS handed_over,
    countIf(event_type = 'turn_processed' AND knowledge_answered = 0) AS template_kept,
    avg(knowledge_confidence) AS mean_confidence
FROM events FINAL
WHERE timestamp >= {since:DateTime('UTC')} AND timestamp < {until:DateTime('UTC')}
  AND knowledge_used = 1
  AND action_status != 'follow_up'
GROUP BY domain
ORDER BY searched DESC, domain

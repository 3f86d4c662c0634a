-- The articles that answered: per cited doc id, the replies that quoted it, their conversations, how many
-- of them were low-confidence (less than {margin:Float64} above the threshold) and the mean confidence.
-- Most cited first, top 100.
-- Parameters: {since:DateTime('UTC')} and {until:DateTime('UTC')}, the window [since, until) in UTC.
--   clickhouse-client 19.x+:  clickhouse-client --param_since='2025-01-01 00:00:00' --param_until='2025-01-08 00:00:00' < FILE
--   clickhouse-client 18.16:  replace each placeholder with a literal first, e.g.
--                             sed "s/{since:[^}]*}/toDateTime('2025-01-01 00:00:00', 'UTC')/g; s/{until:[^}]*}/toDateTime('2025-01-08 00:00:00', 'UTC')/g" FILE | clickhouse-client
--   supportflow replaces them with toDateTime('...', 'UTC') literals (connectors/clickhouse/sql.py).
-- Reads `events FINAL`, so an event inserted twice (retried batch, replayed turn) counts once.
SELECT
    article,
    any(domain) AS domain,
    count() AS answers,
    uniqExact(conversation_id) AS conversations,
    countIf(confidence < threshold + {margin:Float64}) AS low_confidence,
    avg(confidence) AS mean_confidence
FROM
(
    SELECT
        arrayJoin(knowledge_cited) AS article,
        knowledge_domain AS domain,
        conversation_id,
        knowledge_confidence AS confidence,
        knowledge_threshold AS threshold
    FROM events FINAL
    WHERE timestamp >= {since:DateTime('UTC')} AND timestamp < {until:DateTime('UTC')}
      AND event_type = 'turn_processed'
      AND knowledge_used = 1
)
GROUP BY article
ORDER BY answers DESC, article
LIMIT 100

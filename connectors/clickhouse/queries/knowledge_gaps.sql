-- Knowledge gaps: the questions the knowledge base could not answer (handed to a human as
-- `knowledge_gap`), per knowledge domain and normalised wording, most frequent first: what the help center
-- is missing, for a content team. `analytics report` then merges the wordings that ask the same thing
-- (pipelines/evaluation/question_groups.py), so this returns the long tail too (1,000 wordings).
-- Parameters: {since:DateTime('UTC')} and {until:DateTime('UTC')}, the window [since, until) in UTC.
--   clickhouse-client 19.x+:  clickhouse-client --param_since='2025-01-01 00:00:00' --param_until='2025-01-08 00:00:00' < FILE
--   clickhouse-client 18.16:  replace each placeholder with a literal first, e.g.
--                             sed "s/{since:[^}]*}/toDateTime('2025-01-01 00:00:00', 'UTC')/g; s/{until:[^}]*}/toDateTime('2025-01-08 00:00:00', 'UTC')/g" FILE | clickhouse-client
--   supportflow replaces them with toDateTime('...', 'UTC') literals (connectors/clickhouse/sql.py).
-- Reads `events FINAL`, so an event inserted twice (retried batch, replayed turn) counts once.
-- A question is `message_content`, already PII-redacted on sf.events. Normalised = lower case, ASCII
-- punctuation and runs of white space made one space, trimmed: "Do you sell lawn mowers?" and
-- "do you sell  lawn mowers" are one wording. `domain` is the domain of the best passage found ('' when
-- nothing was found, and on hand-overs stored before the knowledge columns existed).
-- `intent` is the wording's most frequent detected intent; `examples` the first two of its spellings in byte
-- order (groupUniqArray takes no size on 18.16; sorting keeps the choice the same on every server).
SELECT
    domain,
    question,
    count() AS handovers,
    uniqExact(conversation_id) AS conversations,
    topK(1)(intent)[1] AS intent,
    arraySlice(arraySort(groupUniqArray(message_content)), 1, 2) AS examples,
    max(timestamp) AS last_seen
FROM
(
    SELECT
        knowledge_domain AS domain,
        replaceRegexpAll(
            replaceRegexpAll(lowerUTF8(message_content), '[[:punct:][:space:]]+', ' '), '^ | $', ''
        ) AS question,
        conversation_id,
        intent,
        message_content,
        timestamp
    FROM events FINAL
    WHERE timestamp >= {since:DateTime('UTC')} AND timestamp < {until:DateTime('UTC')}
      AND event_type = 'escalated'
      AND action_name = 'knowledge_gap'
      AND action_status != 'follow_up'  -- a message to the human already holding it, not a hand-over
)
WHERE question != ''
GROUP BY domain, question
ORDER BY handovers DESC, domain, question
LIMIT 1000

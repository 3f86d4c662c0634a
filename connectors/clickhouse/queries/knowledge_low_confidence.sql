-- Answered with low confidence: turns the knowledge base answered (a cited reply) although the retriever's
-- confidence was less than {margin:Float64} above the threshold it needed: questions whose article is
-- probably weak, the other half of the content-gap report. Per knowledge domain and normalised wording,
-- most frequent first; `analytics report` merges reworded ones as it does the gaps (1,000 wordings).
-- Parameters: {since:DateTime('UTC')} and {until:DateTime('UTC')}, the window [since, until) in UTC.
--   clickhouse-client 19.x+:  clickhouse-client --param_since='2025-01-01 00:00:00' --param_until='2025-01-08 00:00:00' < FILE
--   clickhouse-client 18.16:  replace each placeholder with a literal first, e.g.
--                             sed "s/{since:[^}]*}/toDateTime('2025-01-01 00:00:00', 'UTC')/g; s/{until:[^}]*}/toDateTime('2025-01-08 00:00:00', 'UTC')/g" FILE | clickhouse-client
--   supportflow replaces them with toDateTime('...', 'UTC') literals (connectors/clickhouse/sql.py).
-- Reads `events FINAL`, so an event inserted twice (retried batch, replayed turn) counts once.
-- {margin:Float64}: how far above its threshold an answer's confidence still counts as low (report: 0.1).
-- Question, normalisation, intent and examples as in knowledge_gaps.sql. `article` is the doc id the
-- wording's answers cited most often; `mean_confidence` / `mean_threshold` average over its answers.
-- Rows stored before the knowledge columns existed have knowledge_used = 0 and are not read.
SELECT
    domain,
    question,
    count() AS answers,
    uniqExact(conversation_id) AS conversations,
    topK(1)(intent)[1] AS intent,
    topK(1)(article)[1] AS article,
    avg(confidence) AS mean_confidence,
    avg(threshold) AS mean_threshold,
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
        knowledge_cited[1] AS article,  -- '' for an empty array, on every server
        knowledge_confidence AS confidence,
        knowledge_threshold AS threshold,
        message_content,
        timestamp
    FROM events FINAL
    WHERE timestamp >= {since:DateTime('UTC')} AND timestamp < {until:DateTime('UTC')}
      AND event_type = 'turn_processed'
      AND knowledge_used = 1
      AND knowledge_answered = 1
      AND knowledge_confidence < knowledge_threshold + {margin:Float64}
)
WHERE question != ''
GROUP BY domain, question
ORDER BY answers DESC, domain, question
LIMIT 1000

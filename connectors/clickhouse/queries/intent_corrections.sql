-- Intent corrections: how often humans corrected the NLU's intent, per (original -> corrected) pair, most
-- frequent first ('(unknown)' when the correction did not say what the model had said).
-- Parameters: {since:DateTime('UTC')} and {until:DateTime('UTC')}, the window [since, until) in UTC, on the feedback's `at`.
--   clickhouse-client 19.x+:  clickhouse-client --param_since='2025-01-01 00:00:00' --param_until='2025-01-08 00:00:00' < FILE
--   clickhouse-client 18.16:  replace each placeholder with a literal first, e.g.
--                             sed "s/{since:[^}]*}/toDateTime('2025-01-01 00:00:00', 'UTC')/g; s/{until:[^}]*}/toDateTime('2025-01-08 00:00:00', 'UTC')/g" FILE | clickhouse-client
--   supportflow replaces them with toDateTime('...', 'UTC') literals (connectors/clickhouse/sql.py).
-- Reads `feedback FINAL`, so a feedback record inserted twice (retried batch, replayed action) counts once.
SELECT
    if(original_intent = '', '(unknown)', original_intent) AS original,
    corrected_intent AS corrected,
    count() AS corrections
FROM feedback FINAL
WHERE at >= {since:DateTime('UTC')} AND at < {until:DateTime('UTC')}
  AND kind = 'intent_correction' AND corrected_intent != ''
GROUP BY original, corrected
ORDER BY corrections DESC, original, corrected

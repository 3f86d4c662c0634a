-- Turns by the NLU model that understood them: `triton:intent_classifier:N` when Triton served,
-- `onnxruntime:intent_classifier:N` when a worker fell back to the in-process model (degraded
-- mode: Triton down or slow), `unavailable` when no model answered (those turns were escalated),
-- `keywords` for the keyword `nlu` operator. A rising fallback share means Triton needs attention.
-- Parameters: {since:DateTime('UTC')} and {until:DateTime('UTC')}, the window [since, until) in UTC
--   (see volume_by_channel.sql for running it with clickhouse-client).
-- Reads `events FINAL`, so an event inserted twice counts once.
SELECT
    model_used,
    count() AS turns
FROM events FINAL
WHERE timestamp >= {since:DateTime('UTC')} AND timestamp < {until:DateTime('UTC')}
  AND event_type IN ('turn_processed', 'escalated')
  AND model_used != ''
GROUP BY model_used
ORDER BY turns DESC, model_used

-- Turns by language-model tier: each tier's share of the turns, the tokens it spent and what it cost.
-- `tier` is the event's llm_tier: 'small' or 'large' (the tier that wrote the reply or the plan),
-- 'large+small' when two tiers worked on one turn (e.g. a plan by one, the reply by the other), and
-- 'none (no LLM)' for turns without a model call (playbook turns, no tier configured, or every tier
-- failed and the non-LLM reply went out). A rising 'none' share with tiers configured means the tiers
-- fail or run out of budget (see supportflow_llm_calls_total by outcome).
-- share: the tier's turns over all turns in the window (the shares add up to 1).
-- tokens_in / tokens_out: prompt and completion tokens over the tier's turns; total_cost_usd: their
-- spend (USD, at the tiers' configured prices); cost_per_turn_usd = total_cost_usd / turns.
-- models: the models that wrote those turns (the last model of each turn), sorted.
-- Parameters: {since:DateTime('UTC')} and {until:DateTime('UTC')}, the window [since, until) in UTC
--   (see volume_by_channel.sql for running it with clickhouse-client).
-- Reads `events FINAL`, so an event inserted twice (retried batch, replayed turn) counts once.
-- A "turn" is an event of type turn_processed (answered by the agent) or escalated (handed to a human).
SELECT
    if(llm_tier = '', 'none (no LLM)', llm_tier) AS tier,
    count() AS turns,
    turns / (
        SELECT count()
        FROM events FINAL
        WHERE timestamp >= {since:DateTime('UTC')} AND timestamp < {until:DateTime('UTC')}
          AND event_type IN ('turn_processed', 'escalated')
    ) AS share,
    sum(llm_tokens_in) AS tokens_in,
    sum(llm_tokens_out) AS tokens_out,
    sum(cost_usd) AS total_cost_usd,
    total_cost_usd / turns AS cost_per_turn_usd,
    arrayFilter(m -> m != '', arraySort(groupUniqArray(llm_model))) AS models
FROM events FINAL
WHERE timestamp >= {since:DateTime('UTC')} AND timestamp < {until:DateTime('UTC')}
  AND event_type IN ('turn_processed', 'escalated')
GROUP BY tier
ORDER BY turns DESC, tier

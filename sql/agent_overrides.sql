-- Fast-path overrides per node and reason (node agents' telemetry)
-- plot: x=node y=total_s by=reason kind=bar
-- Reads agent_events (kind = 'override': one fast-path episode with its reason and duration).
-- Parameters: :since_s, :until_s (event times, UTC epoch seconds).
SELECT node,
       reason,
       COUNT(*)        AS overrides,
       SUM(duration_s) AS total_s,
       MAX(duration_s) AS longest_s
FROM agent_events
WHERE kind = 'override' AND at_us >= CAST(:since_s AS BIGINT) * 1000000 AND at_us < CAST(:until_s AS BIGINT) * 1000000
GROUP BY node, reason
ORDER BY node, reason

-- Measured GPU energy per node and UTC day (node agents' telemetry)
-- plot: x=day_start_s y=energy_kwh by=node kind=bar
-- Reads agent_events (kind = 'window': an instance's energy over its telemetry window, from NVML or
-- the simulated node). Energy in kWh, mean power in W. Parameters: :since_s, :until_s (UTC s).
SELECT (at_us / 86400000000) * 86400          AS day_start_s,
       node,
       SUM(energy_j) / 3600000.0              AS energy_kwh,
       SUM(energy_j) / NULLIF(SUM(window_s), 0) AS mean_power_w,
       COUNT(*)                               AS windows
FROM agent_events
WHERE kind = 'window' AND at_us >= CAST(:since_s AS BIGINT) * 1000000 AND at_us < CAST(:until_s AS BIGINT) * 1000000
GROUP BY (at_us / 86400000000) * 86400, node
ORDER BY day_start_s, node

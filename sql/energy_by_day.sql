-- Energy, carbon and cost per simulated policy and UTC day
-- plot: x=day_start_s y=server_energy_kwh by=policy kind=bar
-- Reads sim_runs / sim_windows. Parameters: :since_s, :until_s (window starts, UTC epoch seconds).
SELECT r.label,
       r.policy,
       (CAST(w.window_start_s AS BIGINT) / 86400) * 86400                  AS day_start_s,
       SUM(w.gpu_energy_j) / 3600000.0                                    AS gpu_energy_kwh,
       SUM(w.server_energy_j) / 3600000.0                                 AS server_energy_kwh,
       SUM(w.carbon_g) / 1000.0                                           AS carbon_kg,
       SUM(w.cost_usd)                                                    AS cost_usd,
       SUM(w.requests)                                                    AS requests,
       SUM(w.slo_attainment * w.requests) / NULLIF(SUM(w.requests), 0)    AS slo_attainment
FROM sim_runs r
JOIN sim_windows w ON w.run_id = r.id
WHERE w.window_start_s >= :since_s AND w.window_start_s < :until_s
GROUP BY r.label, r.policy, (CAST(w.window_start_s AS BIGINT) / 86400) * 86400
ORDER BY r.label, day_start_s, r.policy

-- Energy, carbon, cost and SLO attainment per simulated policy, with savings against singlepool
-- plot: x=policy y=gpu_energy_kwh kind=bar
-- Reads sim_runs / sim_windows (written by `dynamo simulate` and `dynamo evaluate`). One row per run;
-- the baseline is the singlepool run of the same evaluation (the latest singlepool run with the same
-- label, mode and trace, started before this one). Energy in kWh
-- (GPU: what NVML measures; server: GPUs plus the non-GPU draw of servers that are on), carbon in kg,
-- cost in USD, attainment weighted by requests. Parameters: :since_s, :until_s (window starts, UTC s).
SELECT r.id AS run_id,
       r.label,
       r.policy,
       r.mode,
       r.trace,
       SUM(w.gpu_energy_j) / 3600000.0                                    AS gpu_energy_kwh,
       SUM(w.server_energy_j) / 3600000.0                                 AS server_energy_kwh,
       SUM(w.carbon_g) / 1000.0                                           AS carbon_kg,
       SUM(w.cost_usd)                                                    AS cost_usd,
       SUM(w.gpu_hours)                                                   AS gpu_hours,
       SUM(w.requests)                                                    AS requests,
       SUM(w.dropped)                                                     AS dropped,
       SUM(w.slo_attainment * w.requests) / NULLIF(SUM(w.requests), 0)    AS slo_attainment,
       100.0 * (SUM(w.gpu_energy_j) / NULLIF(b.gpu_energy_j, 0) - 1)      AS gpu_energy_vs_singlepool_pct,
       100.0 * (SUM(w.server_energy_j) / NULLIF(b.server_energy_j, 0) - 1) AS server_energy_vs_singlepool_pct
FROM sim_runs r
JOIN sim_windows w ON w.run_id = r.id
LEFT JOIN (SELECT run_id, SUM(gpu_energy_j) AS gpu_energy_j, SUM(server_energy_j) AS server_energy_j
           FROM sim_windows WHERE window_start_s >= :since_s AND window_start_s < :until_s
           GROUP BY run_id) b
       ON b.run_id = (SELECT MAX(x.id) FROM sim_runs x
                      WHERE x.policy = 'singlepool' AND x.label = r.label AND x.mode = r.mode
                        AND x.trace = r.trace AND x.id <= r.id)
WHERE w.window_start_s >= :since_s AND w.window_start_s < :until_s
GROUP BY r.id, r.label, r.policy, r.mode, r.trace, b.gpu_energy_j, b.server_energy_j
ORDER BY r.label, r.id

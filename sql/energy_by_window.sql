-- Power, energy, carbon, cost and SLO attainment per simulated policy and window
-- plot: x=window_start_s y=gpu_power_w by=policy kind=line
-- Reads sim_runs / sim_windows. Power in W (mean over the window), energy in kWh, carbon in g, cost
-- in USD. Parameters: :since_s, :until_s (window starts, UTC epoch seconds).
SELECT r.label,
       r.policy,
       w.window_start_s,
       w.gpu_power_w,
       w.server_power_w,
       w.gpu_energy_j / 3600000.0    AS gpu_energy_kwh,
       w.server_energy_j / 3600000.0 AS server_energy_kwh,
       w.carbon_g,
       w.cost_usd,
       w.servers_on,
       w.gpus_on,
       w.requests,
       w.dropped,
       w.ttft_p99_s,
       w.tbt_p99_s,
       w.slo_attainment
FROM sim_runs r
JOIN sim_windows w ON w.run_id = r.id
WHERE w.window_start_s >= :since_s AND w.window_start_s < :until_s
ORDER BY r.label, r.policy, w.window_start_s

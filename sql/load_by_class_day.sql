-- Arrivals and tokens per model, request class and UTC day, from the window loads.
-- plot: x=day_start_s y=arrivals by=class_name kind=bar
-- Reads window_loads (derived from requests by every ingest). Parameters: :since_s, :until_s
-- (window starts, seconds since the Unix epoch, UTC; the runner binds the whole range when omitted).
SELECT (window_start_s / 86400) * 86400        AS day_start_s,
       model,
       class_name,
       SUM(arrivals)                          AS arrivals,
       SUM(input_tokens_sum)                  AS input_tokens_sum,
       SUM(output_tokens_sum)                 AS output_tokens_sum,
       MAX(rate_rps)                          AS peak_window_rate_rps,
       COUNT(*)                               AS windows_with_arrivals
FROM window_loads
WHERE window_start_s >= :since_s AND window_start_s < :until_s
GROUP BY (window_start_s / 86400) * 86400, model, class_name
ORDER BY day_start_s, model, class_name

-- Quarantined rows per reason and source file: what to fix upstream first.
-- plot: x=reason y=rows_quarantined kind=barh
-- Reads quarantine and ingest_runs; a run is in range as in ingest_quality.sql.
SELECT q.reason,
       q.source,
       COUNT(*)      AS rows_quarantined,
       MIN(q.line)   AS first_line
FROM quarantine AS q
JOIN ingest_runs AS r ON r.id = q.ingest_run_id
WHERE r.first_arrival_us IS NULL
   OR (r.first_arrival_us < :until_s * 1000000 AND r.last_arrival_us >= :since_s * 1000000)
GROUP BY q.reason, q.source
ORDER BY rows_quarantined DESC, q.reason, q.source

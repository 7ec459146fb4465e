-- Ingest quality per run: rows read, stored, skipped as already present, quarantined, and the share quarantined.
-- plot: x=run_id y=quarantined_share kind=bar
-- Reads ingest_runs. A run is in range when the arrivals it loaded overlap [:since_s, :until_s);
-- runs that loaded no valid row (first_arrival_us NULL) are listed whatever the range, as they need a look.
SELECT id                                                     AS run_id,
       source,
       status,
       rows_read,
       rows_inserted,
       rows_already_present,
       rows_quarantined,
       CASE WHEN rows_read > 0 THEN rows_quarantined * 1.0 / rows_read ELSE 0.0 END AS quarantined_share,
       first_arrival_us / 1000000                             AS first_arrival_s,
       last_arrival_us / 1000000                              AS last_arrival_s
FROM ingest_runs
WHERE first_arrival_us IS NULL
   OR (first_arrival_us < :until_s * 1000000 AND last_arrival_us >= :since_s * 1000000)
ORDER BY id

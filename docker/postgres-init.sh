#!/bin/sh
# Second database on the same server: Airflow's metadata (the store uses $POSTGRES_DB).
set -e
psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" -c "CREATE DATABASE \"${AIRFLOW_DB:-airflow}\""

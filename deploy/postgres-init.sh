#!/bin/sh
# Run once by the postgres image on an empty data volume (/docker-entrypoint-initdb.d):
# one role and database(s) each for Temporal and for the app, nothing shared.
set -eu
: "${TEMPORAL_DB_PASSWORD:?}" "${APP_DB_PASSWORD:?}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v temporal_pw="$TEMPORAL_DB_PASSWORD" -v app_pw="$APP_DB_PASSWORD" <<'SQL'
CREATE ROLE temporal LOGIN PASSWORD :'temporal_pw';
CREATE DATABASE temporal OWNER temporal;
CREATE DATABASE temporal_visibility OWNER temporal;
CREATE ROLE esim LOGIN PASSWORD :'app_pw';
CREATE DATABASE esim_balance OWNER esim;
SQL

#!/bin/sh
# One-shot (temporalio/admin-tools): Temporal's own schema in PostgreSQL, both databases.
# Idempotent: setup-schema keeps a newer version, update-schema applies only what is new.
# The databases themselves are created by postgres-init.sh.
set -eu
: "${POSTGRES_SEEDS:?}" "${POSTGRES_USER:?}" "${SQL_PASSWORD:?}"
SCHEMA=/etc/temporal/schema/postgresql/v12
for db in temporal:temporal visibility:temporal_visibility; do
  dir=${db%%:*}
  name=${db#*:}
  set -- --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "${DB_PORT:-5432}" -u "$POSTGRES_USER" --db "$name"
  temporal-sql-tool "$@" setup-schema -v 0.0
  temporal-sql-tool "$@" update-schema -d "$SCHEMA/$dir/versioned"
done
echo "temporal schema is up to date"

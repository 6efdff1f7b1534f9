#!/bin/sh
# For the postgres image's /docker-entrypoint-initdb.d (compose.yaml, k8s/10-postgres.yaml): runs
# roles.sql once, when the data directory is created, with the passwords from the environment.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v migrator=billing_migrator -v migrator_password="$BILLING_MIGRATOR_PASSWORD" \
    -v app=billing_app -v app_password="$BILLING_APP_PASSWORD" \
    -f /usr/local/share/billing/roles.sql

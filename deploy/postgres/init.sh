#!/bin/bash
# Run once by the postgres image on an empty data directory (docker-entrypoint-initdb.d):
# passes the llpf role's password from the environment into init.sql, so it is not in a file.
set -euo pipefail
psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres \
    -v llpf_password="$LLPF_DB_PASSWORD" -f /llpf/init.sql

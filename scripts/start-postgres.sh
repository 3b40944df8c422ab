#!/usr/bin/env bash
# Makes sure the local PostgreSQL answers on 127.0.0.1:5432 for the production-like profile
# (`make run-prod`) and the PostgreSQL test tier: starts the installed cluster if it is stopped.
# It installs nothing; on a machine without PostgreSQL it says how to get one and exits 1.
set -euo pipefail
HOST=${PGHOST:-127.0.0.1}
PORT=${PGPORT:-5432}

if command -v pg_isready >/dev/null 2>&1 && pg_isready -h "$HOST" -p "$PORT" -q 2>/dev/null; then
  exit 0
fi
if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  echo "start-postgres: starting the local cluster $version/main"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do
    pg_isready -h "$HOST" -p "$PORT" -q 2>/dev/null && exit 0
    sleep 1
  done
fi
echo "start-postgres: no PostgreSQL answers on $HOST:$PORT; install one (apt-get install postgresql)" \
     "with trust auth for user postgres on 127.0.0.1, or point SCRIBE_POSTGRES_URL at yours" >&2
exit 1

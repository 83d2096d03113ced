#!/usr/bin/env bash
# The whole test suite against real PostgreSQL and Redis, started here when they are down.
set -euo pipefail
cd "$(dirname "$0")/.."

ensure_postgres() {
    pg_isready -q -h 127.0.0.1 -p 5432 && return
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
    for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && return; sleep 1; done
    echo "PostgreSQL did not start" >&2; exit 1
}

ensure_redis() {
    redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && return
    echo "starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
    for _ in $(seq 30); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && return; sleep 1; done
    echo "Redis did not start" >&2; exit 1
}

ensure_chromium() {
    # Browser tests drive Debian's Chromium; never a browser download.
    [ -x /usr/bin/chromium ] && return
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "note: /usr/bin/chromium is missing; browser tests will be skipped (apt-get install chromium)"
    fi
}

ensure_postgres
ensure_redis
ensure_chromium

export DATABASE_URL=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/sem_portal}
export CELERY_BROKER_URL=${TEST_CELERY_BROKER_URL:-redis://127.0.0.1:6379/15}
export SECRET_KEY=${SECRET_KEY:-test-only-secret-key}
export PYTHONUNBUFFERED=1
# The tests' webhook receivers listen on loopback, which production refuses by default.
export SEM_WEBHOOK_ALLOW_LOOPBACK=true
exec .venv/bin/python -m pytest "$@"

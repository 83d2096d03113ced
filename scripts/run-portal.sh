#!/usr/bin/env bash
# Quick start with embedded defaults: SQLite and media under var/, Celery on kombu's filesystem
# broker (no server needed), a real worker and the beat scheduler, gunicorn on 127.0.0.1:8000.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
HOST=${SEM_HOST:-127.0.0.1}
PORT=${SEM_PORT:-8000}
export DJANGO_SETTINGS_MODULE=portal.settings
mkdir -p var/log

"$PY" manage.py quickstart            # migrate, admin login, demo data, schedules, first training queued
"$PY" manage.py collectstatic --noinput --verbosity 0

pids=()
any_alive() { for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && return 0; done; return 1; }
cleanup() {
    # A warm shutdown first; a Celery worker whose pool children died can hang in it, so after
    # 15 s whatever is left (and its children) is killed and Ctrl-C always returns the prompt.
    trap - INT TERM EXIT
    kill "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 30); do any_alive || break; sleep 0.5; done
    for pid in "${pids[@]}"; do pkill -KILL -P "$pid" 2>/dev/null || true; kill -KILL "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

.venv/bin/celery -A workers worker -Q gpu,default,maintenance --loglevel INFO \
    >>var/log/worker.log 2>&1 & pids+=($!)
.venv/bin/celery -A workers beat --loglevel INFO >>var/log/beat.log 2>&1 & pids+=($!)
.venv/bin/gunicorn portal.wsgi:application --bind "$HOST:$PORT" --workers 2 --threads 4 \
    --limit-request-line 4094 --limit-request-fields 64 --limit-request-field_size 8190 \
    --access-logfile var/log/access.log --error-logfile var/log/web.log & pids+=($!)

cat <<MSG

  SEM lab portal: http://$HOST:$PORT/
  Login:          $(cat var/admin-credentials.txt)
  Logs:           var/log/ (worker.log shows classification and training)
  The first model trains on the demo data in the background; its progress is on the Training page.
  Stop with Ctrl-C.

MSG
wait -n "${pids[@]}"

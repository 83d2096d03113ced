# One image for web, workers and beat. Build: docker compose build
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt
COPY . .
RUN SECRET_KEY=build-only DATABASE_URL=sqlite:////tmp/build.sqlite3 python manage.py collectstatic --noinput
RUN useradd --create-home --uid 1000 portal && mkdir -p /data/media /data/models && chown -R portal /data
USER portal
EXPOSE 8000
# Request line and headers are capped by gunicorn; bodies by portal/wsgi.py and portal/request_limits.py.
CMD ["gunicorn", "portal.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "4", "--timeout", "120", \
     "--limit-request-line", "4094", "--limit-request-fields", "64", "--limit-request-field_size", "8190"]

# One container: gunicorn serving wsgi:app, SQLite on a volume, the in-process scheduler.
# Front-end assets come from npm in a build stage; nothing third-party is committed.

FROM node:20-bookworm-slim AS assets
WORKDIR /build
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund --loglevel=error \
 && mkdir -p vendor \
 && cp node_modules/htmx.org/dist/htmx.min.js vendor/ \
 && cp node_modules/@picocss/pico/css/pico.min.css vendor/

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    MILO_DATABASE_URL=sqlite:////data/milo.sqlite3 MILO_BACKUP_DIR=/data/backups
WORKDIR /app
RUN useradd --system --home /app milo && mkdir -p /data /app/instance && chown milo /data /app/instance
COPY pyproject.toml README.md ./
COPY milo_portal ./milo_portal
RUN pip install --no-cache-dir -e . 
COPY wsgi.py gunicorn.conf.py ./
COPY migrations ./migrations
COPY templates ./templates
COPY static ./static
COPY --from=assets /build/vendor ./static/vendor
USER milo
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
# Refuse a database a newer version has upgraded (clear message, non-zero exit), then migrate.
CMD ["sh", "-c", "flask --app milo_portal milo check-schema && flask --app milo_portal db upgrade && exec gunicorn -c gunicorn.conf.py wsgi:app"]

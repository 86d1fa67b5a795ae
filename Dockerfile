# imagebot: one image for every platform; configured entirely by environment variables.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    IMAGEBOT_DATABASE=/data/imagebot.sqlite3 \
    IMAGEBOT_DATA_DIR=/data \
    IMAGEBOT_HTTP_PORT=3000

RUN useradd --create-home --uid 10001 imagebot \
    && mkdir -p /data /app \
    && chown imagebot:imagebot /data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY providers ./providers
COPY storage ./storage
RUN pip install --no-cache-dir .

USER imagebot
VOLUME ["/data"]
# The process's one HTTP server, in every mode (the image sets IMAGEBOT_HTTP_PORT, so the console serves
# it too): Slack's /slack/events, Discord's /discord/interactions, /healthz, /readyz and /metrics.
EXPOSE 3000
# Liveness through /healthz on loopback, with the standard library only; IMAGEBOT_HTTP_PORT=off turns the
# server off, and then there is nothing to ask: the check passes. (A IMAGEBOT_HTTP_HOST that is not
# 0.0.0.0 or 127.0.0.1 needs its own check.) Readiness (/readyz) is for the orchestrator's probes.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request as r; p = (os.environ.get('IMAGEBOT_HTTP_PORT') or '3000').strip(); sys.exit(0) if p.lower() in ('off', 'none', 'disabled') else r.urlopen('http://127.0.0.1:%s/healthz' % p, timeout=4).read()"]

CMD ["imagebot", "run"]

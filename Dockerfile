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
# Slack HTTP mode listens here (Socket Mode and Discord need no inbound port).
EXPOSE 3000

CMD ["imagebot", "run"]

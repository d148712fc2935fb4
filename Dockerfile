# syntax=docker/dockerfile:1
# Two stages: the build stage installs the locked dependencies (hashes checked) and SkyGate into
# a virtualenv and checks the shipped model files against their SHA-256 sums; the runtime stage
# copies only that virtualenv and runs as an unprivileged user.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/skygate
WORKDIR /src
# Dependencies first (their layer stays cached while only the code changes): exact versions
# and hashes from requirements.lock, nothing resolved at build time.
COPY requirements.lock ./
RUN /opt/skygate/bin/pip install --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md celeryconfig.py ./
COPY schemas ./schemas
COPY pipeline ./pipeline
COPY storage ./storage
COPY service ./service
COPY workers ./workers
COPY api ./api
COPY skygate ./skygate
# A truncated or replaced model file fails the build here, not the first image in production.
RUN cd pipeline/assets && sha256sum --check --strict SHA256SUMS
# The build backend comes from the lock too (setuptools, wheel): no isolated build env to fetch.
RUN /opt/skygate/bin/pip install --no-deps --no-build-isolation .

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/skygate/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    SKYGATE_DATA_DIR=/data SKYGATE_LOG_FORMAT=json
RUN groupadd --system --gid 10001 skygate \
    && useradd --system --uid 10001 --gid skygate --home-dir /data --no-create-home skygate \
    && install -d -o skygate -g skygate -m 0750 /data
COPY --from=build /opt/skygate /opt/skygate
# celeryconfig.py is a top-level module: `celery -A workers` imports it from the venv.
WORKDIR /data
USER skygate:skygate
CMD ["skygate", "--help"]

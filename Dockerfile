# Production image of the warmbox API. The sandboxes themselves are separate images
# (sandbox_images/) that run on the Docker engine DOCKER_HOST points at.
#
# Both images it starts from are build arguments, so a machine without Docker Hub can build it:
#   BASE_IMAGE  any Debian-like image with python3 >= 3.11 (default: the official slim image;
#               the suite passes warmbox-base:bookworm, the debootstrapped base of sandbox_images)
#   UV_IMAGE    an image with the uv binary at /uv (default: Astral's official image); an image
#               that also holds a uv cache at /cache, with UV_SYNC_ARGS=--offline, installs the
#               dependencies without reaching an index (what the suite does)
# tests/deploy/test_production_image.py builds and starts it; the README shows the commands.
ARG BASE_IMAGE=python:3.11-slim
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

# --- builder: resolve the locked dependencies into /app/.venv with the base's own python3 ---
FROM ${BASE_IMAGE} AS builder
ARG UV_SYNC_ARGS=""
# The whole uv image (it is FROM scratch: /uv, /uvx, and /cache when one was prepared).
COPY --from=uv / /opt/uv/
ENV PATH=/opt/uv:$PATH UV_CACHE_DIR=/opt/uv/cache \
    UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never UV_PYTHON=python3
WORKDIR /app
# Dependencies before code, so a code change does not reinstall them.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project ${UV_SYNC_ARGS}

# --- runtime: the venv and the code, nothing to build with ---
FROM ${BASE_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PATH=/app/.venv/bin:$PATH \
    ENVIRONMENT=production WEB_CONCURRENCY=1 HOST=0.0.0.0 PORT=8000
RUN groupadd --gid 10000 warmbox \
    && useradd --uid 10000 --gid 10000 --no-create-home --home-dir /app --shell /usr/sbin/nologin warmbox
WORKDIR /app
COPY --from=builder /app/.venv /app/.venv
COPY pyproject.toml uv.lock ./
COPY alembic/ alembic/
COPY app/ app/
COPY sandbox_images/ sandbox_images/
COPY scripts/prestart.sh scripts/prestart.sh
# The default SQLite location must be writable by the service user; use DATABASE_URL in production.
RUN mkdir -p /app/data && chown warmbox:warmbox /app/data
# The sandboxes are started through the engine's socket: run the container with
# `--group-add $(stat -c %g /var/run/docker.sock)` so this user may use it (never as root).
USER warmbox
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=4)"]
# sh -c so the migration runs first; app.serve reads HOST, PORT and WEB_CONCURRENCY when the
# container starts and keeps uvicorn's proxy headers off (TRUSTED_PROXIES decides, in the app).
CMD ["sh", "-c", "bash scripts/prestart.sh && exec python -m app.serve"]

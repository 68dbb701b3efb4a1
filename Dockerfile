# Production image of the warmbox API. The sandboxes themselves are separate images
# (sandbox_images/) that run on the Docker engine DOCKER_HOST points at.

# --- builder: resolve the locked dependencies into /app/.venv ---
FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
RUN pip install uv
WORKDIR /app
# Dependencies before code, so a code change does not reinstall them.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project

# --- runtime: the venv and the code, nothing to build with ---
FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PATH=/app/.venv/bin:$PATH \
    ENVIRONMENT=production WEB_CONCURRENCY=1 PORT=8000
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
USER warmbox
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=4)"]
# sh -c so PORT and WEB_CONCURRENCY are read when the container starts, not when it is built.
CMD ["sh", "-c", "bash scripts/prestart.sh && exec uvicorn app.main:app_factory --factory --host 0.0.0.0 --port ${PORT:-8000} --workers ${WEB_CONCURRENCY}"]

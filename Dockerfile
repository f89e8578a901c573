# One image for every Meridian process: `meridian api` (default), `meridian worker`, `meridian migrate`.
FROM python:3.11-slim

# Unbuffered so logs reach `docker logs` as they happen; no .pyc files written at runtime.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src

# Copy only what the package needs, not the whole checkout: a developer's .venv and .meridian/
# (`meridian dev` writes local state and env, which can hold tokens) must never end up in an image.
# Keep this list in step with [tool.setuptools] packages in pyproject.toml.
# README.m[d] is a wildcard so the build still works while README.md doesn't exist.
COPY pyproject.toml README.m[d] ./
COPY meridian/ meridian/
COPY domain/ domain/
COPY workflows/ workflows/
COPY activities/ activities/
COPY workers/ workers/
COPY api/ api/
COPY db/ db/

RUN pip install --no-cache-dir . \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin meridian

# Run unprivileged, from a directory the user owns, so the relative default state dir (.meridian) is writable.
USER meridian
WORKDIR /home/meridian

# The settings default binds 127.0.0.1, which is unreachable through a published container port.
ENV MERIDIAN_API_HOST=0.0.0.0

EXPOSE 8000
CMD ["meridian", "api"]

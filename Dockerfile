# HES image: the `hes` command and everything it imports, run as an unprivileged user.
#
#   docker build -t hes:local .
#   docker run --rm -p 8000:8000 hes:local                 # embedded PostgreSQL + NATS inside
#   docker compose up                                      # TimescaleDB, NATS, Valkey (see docker-compose.yml)
#
# Without HES_DATABASE_URL / HES_NATS_URL, `hes up` starts embedded PostgreSQL and NATS under
# HES_DATA_DIR (/var/lib/hes here): mount a volume there to keep their data and the generated
# JWT secret. With both URLs set it uses those servers and HES_DATA_DIR stays unused unless
# HES_JWT_SECRET is unset.
#
# The image installs exactly the runtime dependencies pinned (with hashes) in uv.lock. It holds
# GPL-2.0 and LGPL-3.0 code (gurux-dlms, psycopg): whoever distributes it must also offer its
# corresponding source, see docs/licensing.md. /opt/hes/share/licenses has every licence text.

FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_PROJECT_ENVIRONMENT=/opt/hes \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1

WORKDIR /src
COPY pyproject.toml uv.lock ./
# uv at the version uv.lock pins; dependencies first (a layer that survives code changes).
RUN pip install "uv==$(sed -n '/^name = "uv"$/{n;s/^version = "\(.*\)"/\1/p;}' uv.lock)" \
 && uv sync --locked --no-install-project --no-editable
COPY . .
RUN uv sync --locked --no-editable \
 && mkdir -p /opt/hes/share/licenses \
 && cp LICENSE /opt/hes/share/licenses/HES-LICENSE \
 && /opt/hes/bin/hes licences --json --pyproject pyproject.toml \
      > /opt/hes/share/licenses/dependencies.json


FROM python:3.11-slim

ENV PATH=/opt/hes/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HES_HOST=0.0.0.0 \
    HES_PORT=8000 \
    HES_DATA_DIR=/var/lib/hes

RUN groupadd --system --gid 10001 hes \
 && useradd --system --uid 10001 --gid hes --home-dir /var/lib/hes --shell /usr/sbin/nologin hes \
 && install -d -o hes -g hes -m 0750 /var/lib/hes

COPY --from=build /opt/hes /opt/hes

USER hes
WORKDIR /var/lib/hes

EXPOSE 8000

# Liveness only (the process serves HTTP); readiness with dependency checks is /health/ready.
# python:3.11-slim has no curl or wget, so the probe is a one-line Python request.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/live' % os.environ.get('HES_PORT', '8000'), timeout=4)"]

CMD ["hes", "up"]

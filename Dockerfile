# HES image: the `hes` command and everything it imports, run as an unprivileged user.
#
#   docker build -t hes:local .
#   docker run --rm -p 8000:8000 hes:local                 # embedded PostgreSQL + NATS inside
#   docker compose up                                      # TimescaleDB, NATS, Redis (see docker-compose.yml)
#
# Without HES_DATABASE_URL / HES_NATS_URL, `hes up` starts embedded PostgreSQL and NATS under
# HES_DATA_DIR (/var/lib/hes here): mount a volume there to keep their data and the generated
# JWT secret. With both URLs set it uses those servers and HES_DATA_DIR stays unused unless
# HES_JWT_SECRET is unset.

FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY . .
# A virtual environment is easy to copy whole into the runtime stage.
RUN python -m venv /opt/hes \
 && /opt/hes/bin/pip install .


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

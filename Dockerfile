# loadsim as a container: the relay's metrics on :9477, a state volume for resuming runs.
#
#   bash scripts/docker-wheels.sh          # wheels built on the host -> dist/wheels/
#   docker build -t loadsim:local .
#   docker run --rm --network host -v loadsim-state:/state loadsim:local
#
# The image installs loadsim from those wheels with `pip install --no-index`: it needs no
# package index and compiles nothing, so no build tools are in it.
#
# BASE_IMAGE is any CPython 3.11 image on Debian 12 whose `python3 -m venv` works (glibc
# 2.36 is what the wheels are picked for). The default is the official python:3.11-slim.
# Without a registry, scripts/container-test.sh builds one with debootstrap (bookworm
# minbase + python3 + python3-venv, scripts/container-base.Dockerfile) and passes
# `--build-arg BASE_IMAGE=local/bookworm-python:12`.
#
# Stopping: SIGTERM (`docker stop`) stops arrivals and drains sends in flight for up to the
# profile's grace, then loadsim writes the summary and exits 0. The default grace (35 s, so
# that a send hitting the relay's 30 s timeout still completes) is longer than docker's
# 10 s stop timeout: use `docker stop -t 45` (compose sets stop_grace_period: 45s) or pass
# `--grace 8s`; otherwise a slow send in flight gets loadsim killed (exit 137; with --state
# the last checkpoint, at most --checkpoint-interval old, survives).
ARG BASE_IMAGE=python:3.11-slim

# ---- install: a virtualenv from the wheels (the wheels stay out of the final image) ----
FROM ${BASE_IMAGE} AS install
# The venv is created at the path it keeps in the final stage, on the same base image.
# Dependencies first, in a layer that a change to loadsim alone does not rebuild; they are
# exactly the wheel files scripts/docker-wheels.sh pinned, and loadsim is its wheel file.
COPY dist/wheels/deps/ /tmp/deps/
RUN python3 -m venv /opt/loadsim \
    && /opt/loadsim/bin/pip install --no-cache-dir --no-index /tmp/deps/*.whl
COPY dist/wheels/loadsim-*.whl /tmp/
# pip and setuptools leave the venv: nothing installs anything at run time.
RUN /opt/loadsim/bin/pip install --no-cache-dir --no-index --find-links /tmp/deps /tmp/loadsim-*.whl \
    && /opt/loadsim/bin/pip uninstall --yes pip setuptools \
    && /opt/loadsim/bin/loadsim --version

# ---- final ----
FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="loadsim" \
      org.opencontainers.image.description="Gmail-send traffic with the relay's real Prometheus metrics" \
      org.opencontainers.image.licenses="MIT"

# A fixed, non-root uid and gid (10001) own /state, the only place loadsim writes.
RUN groupadd --system --gid 10001 loadsim \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin loadsim \
    && mkdir /state \
    && chown 10001:10001 /state

COPY --from=install /opt/loadsim /opt/loadsim
COPY profiles/ /app/profiles/
COPY deploy/relay/ /app/deploy/relay/

ENV PATH=/opt/loadsim/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LOADSIM_HEALTH_URL=http://127.0.0.1:9477/healthz \
    LOADSIM_RELAY_CONFIG=/app/deploy/relay

WORKDIR /app
# The state file (--state) and the summary (--summary-json) survive the container here.
VOLUME /state
USER 10001:10001
EXPOSE 9477

# Python's standard library only (no curl in the image). Set LOADSIM_HEALTH_URL when
# --listen uses another port. The first check runs one interval after the start.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['LOADSIM_HEALTH_URL'], timeout=2)"]

# Exec form: loadsim is PID 1 and receives docker's SIGTERM itself.
ENTRYPOINT ["loadsim"]
# Loopback by default: with --network host the metrics stay on the host's loopback, and on
# a bridge network nothing is reachable from outside the container. To publish the port,
# pass the command with `--listen 0.0.0.0:9477` and publish it on loopback:
#   docker run -p 127.0.0.1:9477:9477 loadsim:local run /app/profiles/realistic.toml --listen 0.0.0.0:9477
# (docker-compose.yml does the same inside its network). The run resumes from the state
# file after a restart on the same /state volume.
# --grace 8s: docker stop waits 10 s before SIGKILL; sends still in flight after 8 s are
# counted as abandoned and the run exits 0 (use -t 45 and a longer --grace to drain 30 s timeouts).
CMD ["run", "/app/profiles/realistic.toml", "--listen", "127.0.0.1:9477", "--progress", "json", \
     "--state", "/state/run.state", "--fresh-if-missing", "--summary-json", "/state/summary.json", \
     "--grace", "8s"]

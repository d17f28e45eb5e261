# The registry-free stand-in for python:3.11-slim: Debian 12 minbase (debootstrap, imported
# as local/bookworm:12 by scripts/container-test.sh) with Debian's CPython 3.11 and venv.
# Built with `docker build --network host`: apt reaches Debian's mirror over plain HTTP
# (signed by the archive keys), which needs no certificate authority in the image.
ARG ROOT_IMAGE=local/bookworm:12
FROM ${ROOT_IMAGE}

# Versions are not pinned: this base follows bookworm and its security updates, and is
# rebuilt weekly by scripts/container-test.sh; a pin would break at the next point release.
# hadolint ignore=DL3008
RUN printf '%s\n' \
        'deb http://deb.debian.org/debian bookworm main' \
        'deb http://deb.debian.org/debian bookworm-updates main' \
        'deb http://deb.debian.org/debian-security bookworm-security main' \
        > /etc/apt/sources.list \
    && apt-get update -q \
    && apt-get upgrade -y -q \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3 python3-venv \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb

CMD ["python3"]
